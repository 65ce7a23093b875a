// The page's script, a module (base.html loads it; it imports the others): the composer and the
// socket's state (composer.js), the streaming answer (stream.js), Copy (copy.js), the message
// actions (actions.js), the sidebar and renaming (sidebar.js), and the page's keys.
import { sendOnEnter, stopOnEscape } from "./composer.js";
import "./copy.js";
import { stopFollowingOnKeys } from "./stream.js";
import { editKeys } from "./actions.js";
import { closeOnEscape } from "./sidebar.js";
import { listenForKeys } from "./keys.js";

// Every key press goes through these, in this order (keys.js).
listenForKeys([
  closeOnEscape, // Esc in the rename form or the open sidebar, and nothing else then
  sendOnEnter, // Enter in the composer
  stopOnEscape, // Esc while an answer runs
  stopFollowingOnKeys, // the keys that scroll up
  editKeys, // Enter and Esc in a message's edit box
]);

// A form with data-confirm asks first (an inline onsubmit would break the Content-Security-Policy).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
