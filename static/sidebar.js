// The conversations' sidebar (its toggle on a narrow screen), renaming in the page, and the tab's
// title following the conversation's.

// --- The sidebar's toggle: on a narrow screen the panel folds behind it (chat.css). ---
function setOpen(toggle, open) {
  toggle.setAttribute("aria-expanded", String(open));
}

document.addEventListener("click", (event) => {
  const toggle = event.target.closest(".sidebar-toggle");
  if (toggle) setOpen(toggle, toggle.getAttribute("aria-expanded") !== "true");
});

// --- Rename: the button opens the form in place of the title; Enter saves, Esc cancels. ---
function renameParts() {
  const form = document.getElementById("rename-form");
  if (!form) return null;
  return {
    form,
    opener: document.querySelector(".rename-open"),
    title: document.getElementById("conversation-title"),
    field: form.querySelector("input[name=title]"),
  };
}

function openRename() {
  const parts = renameParts();
  if (!parts) return;
  parts.field.value = parts.title ? parts.title.textContent.trim() : parts.field.value;
  parts.form.hidden = false;
  parts.opener.hidden = true;
  parts.opener.setAttribute("aria-expanded", "true");
  parts.title?.classList.add("renaming");
  parts.field.focus();
  parts.field.select();
}

function closeRename() {
  const parts = renameParts();
  if (!parts || parts.form.hidden) return;
  parts.form.hidden = true;
  parts.opener.hidden = false;
  parts.opener.setAttribute("aria-expanded", "false");
  document.getElementById("conversation-title")?.classList.remove("renaming");
  parts.opener.focus();
}

document.addEventListener("click", (event) => {
  if (event.target.closest(".rename-open")) openRename();
  if (event.target.closest(".rename-cancel")) closeRename();
});

// Keys (keys.js, first of all, so that composer.js's Esc does not stop a running answer too):
// Esc in the rename form cancels it, and Esc in the open sidebar folds it.
export function closeOnEscape(event) {
  if (event.key !== "Escape") return false;
  if (event.target.closest?.("#rename-form")) {
    event.preventDefault();
    closeRename();
    return true;
  }
  const toggle = document.querySelector('.sidebar-toggle[aria-expanded="true"]');
  if (toggle && event.target.closest?.("#sidebar")) {
    event.preventDefault();
    setOpen(toggle, false);
    toggle.focus();
    return true;
  }
  return false;
}

// The ws extension reads the form when it is submitted; it is closed right after. The new title
// comes back over the socket (or an error in #chat-error).
document.addEventListener("submit", (event) => {
  if (event.target.id === "rename-form") setTimeout(closeRename, 0);
});

// --- The tab's title is the conversation's, whenever the socket swaps the heading. ---
function followTitle() {
  const heading = document.getElementById("conversation-title");
  const title = heading?.textContent.trim();
  if (title && document.title !== title) document.title = title;
  const field = document.querySelector("#rename-form[hidden] input[name=title]");
  if (title && field) field.value = title;
}
document.addEventListener("htmx:oobAfterSwap", followTitle);
document.addEventListener("htmx:wsAfterMessage", followTitle);
