// Enter sends, Shift+Enter starts a new line; the view follows the newest text.
document.addEventListener("keydown", (event) => {
  const field = event.target;
  if (field.name === "message" && event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    field.form.requestSubmit();
  }
});

document.addEventListener("htmx:wsAfterMessage", () => {
  const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 200;
  if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
});

// A form with data-confirm asks first (an inline onsubmit would break the Content-Security-Policy).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// The server closes the socket with 4404 when the conversation is gone (or not yours).
document.addEventListener("htmx:wsClose", (event) => {
  if (event.detail.event.code === 4404) {
    const error = document.getElementById("chat-error");
    if (error) error.textContent = "This conversation no longer exists.";
  }
});

// ---------------------------------------------------------------------------------------------
// Code blocks: a Copy button on each. The server's Markdown is sanitised, so the page adds the
// buttons, to the blocks already there and to every finished message swapped in over the socket.
function addCopyButtons(root) {
  for (const block of root.querySelectorAll(".markdown pre")) {
    if (block.parentElement.classList.contains("code-block")) continue;
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    block.replaceWith(wrapper);
    wrapper.append(block, button);
  }
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No Clipboard API outside secure contexts (plain http to another host): the old way.
    const buffer = document.createElement("textarea");
    buffer.className = "copy-buffer";
    buffer.value = text;
    buffer.setAttribute("readonly", "");
    document.body.append(buffer);
    buffer.select();
    const copied = document.execCommand("copy");
    buffer.remove();
    return copied;
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy-code");
  if (!button) return;
  const copied = await copyText(button.parentElement.querySelector("pre").textContent);
  button.textContent = copied ? "Copied" : "Copy failed";
  clearTimeout(button.resetTimer);
  button.resetTimer = setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

addCopyButtons(document);
new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) {
      if (node.nodeType === Node.ELEMENT_NODE) addCopyButtons(node);
    }
  }
}).observe(document.body, { childList: true, subtree: true });
