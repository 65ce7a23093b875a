// The reader's side of a streaming answer: morphs that keep what they opened, closed or selected,
// the view that follows the newest text only while they are at the end, and long tool output.
import { addCopyButtons } from "./copy.js";

// --- Morphs (idiomorph, through htmx's morph extension: hx-swap-oob="morph") -----------------
// A <details> the reader opened or closed keeps that state: the server's `open` is only a
// default. Summary clicks (keyboard activation included) mark it; the mark survives morphs.
document.addEventListener("click", (event) => {
  const summary = event.target.closest("summary");
  if (summary && summary.parentElement.tagName === "DETAILS") {
    summary.parentElement.dataset.toggled = "";
  }
});

// Attributes that hold the reader's state, which the server's HTML never has.
function readerState(name, node) {
  if (name === "data-toggled") return true;
  if (name === "open") return node.hasAttribute("data-toggled");
  return node.matches(".long-output, .show-all") && ["class", "aria-expanded"].includes(name);
}

if (window.Idiomorph) {
  // The morph extension again, as 0.8.0 defines it but for two things: its isInlineSwap says
  // yes to every style that is not a morph (a "beforeend" OOB swap in the chat would then
  // insert the wrapper element, not its children), and a "morph:{...}" style goes through
  // Function(), which the Content-Security-Policy forbids. Only hx-swap-oob="morph" is used.
  htmx.defineExtension("morph", {
    isInlineSwap: (swapStyle) => swapStyle === "morph",
    handleSwap: (swapStyle, target, fragment) => {
      if (swapStyle !== "morph") return false;
      return Idiomorph.morph(target, fragment.children, { morphStyle: "outerHTML" });
    },
  });
  const callbacks = Idiomorph.defaults.callbacks;
  callbacks.beforeAttributeUpdated = (name, node) => !readerState(name, node);
}

htmx.on("htmx:oobBeforeSwap", (event) => {
  // The new HTML gets the copy buttons the page has, so that code blocks morph into themselves.
  addCopyButtons(event.detail.fragment);
});

htmx.on("htmx:oobAfterSwap", (event) => {
  // Blocks appended while an answer streams (their own <pre> is the added node).
  const target = event.detail.target;
  if (target?.isConnected) addCopyButtons(target);
});

// --- Long tool output: "Show all" / "Show less" -----------------------------------------------
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.show-all");
  if (!button) return;
  const output = button.closest(".long-output");
  const expanded = output.classList.toggle("expanded");
  button.setAttribute("aria-expanded", String(expanded));
});

// --- Following the newest text --------------------------------------------------------------
// The view follows while the reader is at the end; scrolling up (wheel, touch, keys, the
// scroll bar) stops it and shows "Jump to latest", which goes back and follows again.
const chat = document.querySelector("section.chat");
const SLACK = 4; // px: rounding of zoomed pages
let following = true;
let ownScroll = null; // where our own last scroll went, to tell it from the reader's
let jump = null;

function bottom() {
  return document.documentElement.scrollHeight - window.innerHeight;
}

function atBottom() {
  return window.scrollY >= bottom() - SLACK;
}

function showJump() {
  const hidden = following || atBottom();
  if (jump.hidden !== hidden) jump.hidden = hidden;
}

function toEnd() {
  ownScroll = Math.max(0, bottom());
  window.scrollTo(0, ownScroll);
}

function stopFollowing() {
  following = false;
  ownScroll = null;
  showJump();
}

// Keys (keys.js): the keys that scroll up stop the following, outside the text fields.
export function stopFollowingOnKeys(event) {
  if (!chat) return;
  if (event.target.closest?.("textarea, input, select, [contenteditable]")) return;
  const up = ["ArrowUp", "PageUp", "Home"].includes(event.key) || (event.key === " " && event.shiftKey);
  if (up && bottom() > SLACK) stopFollowing();
}

function follow() {
  jump = document.createElement("button");
  jump.type = "button";
  jump.className = "jump-latest";
  jump.textContent = "Jump to latest";
  jump.hidden = true;
  chat.append(jump);

  window.addEventListener("wheel", (event) => {
    if (event.deltaY < 0 && bottom() > SLACK) stopFollowing();
  }, { passive: true });
  window.addEventListener("touchmove", () => { ownScroll = null; }, { passive: true });

  window.addEventListener("scroll", () => {
    if (ownScroll !== null && Math.abs(window.scrollY - ownScroll) <= SLACK) return;
    // The reader's scroll (or the page getting shorter): follow again only at the end.
    ownScroll = null;
    following = atBottom();
    showJump();
  }, { passive: true });

  htmx.on("htmx:wsAfterMessage", () => {
    if (following) toEnd();
    showJump();
  });

  // Sending a message follows its answer.
  htmx.on("htmx:wsConfigSend", (event) => {
    if (event.target.id !== "composer") return;
    following = true;
    toEnd();
    showJump();
  });

  jump.addEventListener("click", () => {
    following = true;
    toEnd();
    showJump();
  });

  // A conversation opens at its latest message, as chats do.
  following = true;
  toEnd();
  showJump();
}

if (chat) follow();
