// Message actions: Edit's inline form (Copy is copy.js's; Regenerate, Retry and Continue are
// ws-send forms that need no script). Listeners on the document: the messages are swapped in
// over the socket, and each action re-renders the whole list.

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

document.addEventListener("click", (event) => {
  const editButton = event.target.closest("button.action-edit");
  if (editButton) {
    openEdit(editButton);
    return;
  }
  const cancel = event.target.closest("button.action-edit-cancel");
  if (cancel) closeEdit(cancel.form);
});

// Keys (keys.js): in the edit box, as in the composer, Enter (or Ctrl/Cmd+Enter) saves and
// Shift+Enter starts a new line; Esc cancels.
export function editKeys(event) {
  const form = event.target.closest?.(".message-edit");
  if (!form || event.target.name !== "text") return;
  if (event.key === "Escape") {
    event.preventDefault();
    closeEdit(form);
  } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
}
