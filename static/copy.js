// Copy: the one helper every Copy button goes through, a code block's (added here) and a message's
// (actions in the message's template: data-copy names the <template> that holds its raw text).

// The text on the clipboard; false when the browser refused.
export async function copyText(text) {
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

// Copies `text` and says so on the button for two seconds.
async function copyWith(button, text) {
  const copied = text === null ? false : await copyText(text);
  button.textContent = copied ? "Copied" : "Copy failed";
  clearTimeout(button.resetTimer);
  button.resetTimer = setTimeout(() => { button.textContent = "Copy"; }, 2000);
}

// What a Copy button copies: its code block's text, or the raw text of the message it names.
function copied(button) {
  if (button.matches(".copy-code")) return button.parentElement.querySelector("pre").textContent;
  const source = document.getElementById(button.dataset.copy);
  return source ? source.content.textContent : null;
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy-code, button[data-copy]");
  if (button) copyWith(button, copied(button));
});

// Code blocks: a Copy button on each. The server's Markdown is sanitised, so the page adds the
// buttons, to the blocks already there and to every finished message swapped in over the socket
// (stream.js adds them to the HTML before a morph too).
export function addCopyButtons(root) {
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

addCopyButtons(document);
new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) {
      if (node.nodeType === Node.ELEMENT_NODE) addCopyButtons(node);
    }
  }
}).observe(document.body, { childList: true, subtree: true });
