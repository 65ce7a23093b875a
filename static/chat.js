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
