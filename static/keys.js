// The page's one keydown listener: it hands each key press to the handlers chat.js lists, in that
// order; a handler that returns true has dealt with it, and the ones after it do not see it.

export function listenForKeys(handlers) {
  document.addEventListener("keydown", (event) => {
    for (const handler of handlers) {
      if (handler(event) === true) return;
    }
  });
}
