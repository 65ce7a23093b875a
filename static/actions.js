// Message actions: Copy, and Edit's inline form (Regenerate, Retry and Continue are ws-send
// forms that need no script). Listeners on the document: the messages are swapped in over the
// socket, and each action re-renders the whole list.
(() => {
  async function copy(text) {
    // chat.js's copyText falls back to a hidden text box where the Clipboard API is missing.
    if (typeof copyText === "function") return copyText(text);
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      return false;
    }
  }

  function editForm(button) {
    return document.getElementById(button.getAttribute("aria-controls"));
  }

  function openEdit(button) {
    const form = editForm(button);
    if (!form) return;
    form.hidden = false;
    button.setAttribute("aria-expanded", "true");
    form.closest(".message").classList.add("editing");
    const box = form.querySelector("textarea");
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  function closeEdit(form) {
    form.reset();
    form.hidden = true;
    const message = form.closest(".message");
    message.classList.remove("editing");
    const button = message.querySelector(`.action-edit[aria-controls="${form.id}"]`);
    if (button) {
      button.setAttribute("aria-expanded", "false");
      button.focus();
    }
  }

  document.addEventListener("click", async (event) => {
    const copyButton = event.target.closest("button[data-copy]");
    if (copyButton) {
      const source = document.getElementById(copyButton.dataset.copy);
      const copied = source ? await copy(source.content.textContent) : false;
      copyButton.textContent = copied ? "Copied" : "Copy failed";
      clearTimeout(copyButton.resetTimer);
      copyButton.resetTimer = setTimeout(() => { copyButton.textContent = "Copy"; }, 2000);
      return;
    }
    const editButton = event.target.closest("button.action-edit");
    if (editButton) {
      openEdit(editButton);
      return;
    }
    const cancel = event.target.closest("button.action-edit-cancel");
    if (cancel) closeEdit(cancel.form);
  });

  // In the edit box, as in the composer: Enter (or Ctrl/Cmd+Enter) saves, Shift+Enter starts a
  // new line; Esc cancels.
  document.addEventListener("keydown", (event) => {
    const form = event.target.closest?.(".message-edit");
    if (!form || event.target.name !== "text") return;
    if (event.key === "Escape") {
      event.preventDefault();
      closeEdit(form);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
