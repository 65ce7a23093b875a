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
