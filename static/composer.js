// The composer and the socket's state. The form is never replaced: the server acknowledges a
// message with #composer-ack and the page clears what it sent (anything typed since stays). A
// message sent while the socket is closed waits in the ws extension's queue, which it empties
// once the socket opens again.

// The extension's default waits up to a minute between tries; this tries after 0.5, 1, 2 s,
// then every 3 s.
const RECONNECT_DELAYS = [500, 1000, 2000, 3000];

const chat = {
  socket: null, // the ws extension's socket (its public interface)
  open: false,
  everOpened: false,
  closed: false, // closed with nothing trying again
  retry: null, // the next try: {at, timer, callback}
  sent: null, // the text of the message sent or queued, until its acknowledgement or an error
  queued: false,
};

htmx.config.wsReconnectDelay = (retryCount) => {
  const delay = RECONNECT_DELAYS[Math.min(retryCount, RECONNECT_DELAYS.length - 1)];
  // The extension sets its timer right after asking for the delay. Keep that timer, so that the
  // countdown can show it and the browser's `online` event can bring the try forward.
  const setTimer = window.setTimeout;
  window.setTimeout = (callback, ms) => {
    window.setTimeout = setTimer;
    const timer = setTimer(callback, ms);
    chat.retry = { at: Date.now() + ms, timer, callback };
    return timer;
  };
  return delay;
};

function composerBox() {
  return document.querySelector("#composer textarea");
}

function composerNote(text) {
  const note = document.getElementById("composer-note");
  if (note && note.textContent !== text) note.textContent = text;
  document.getElementById("composer")?.toggleAttribute("data-pending", text !== "" && chat.sent !== null);
}

function showConnection() {
  const indicator = document.getElementById("connection");
  if (!indicator) return;
  let state = "connecting";
  let text = chat.everOpened ? "Reconnecting…" : "Connecting…";
  let countdown = "";
  if (chat.closed) {
    [state, text] = ["closed", "Disconnected"];
  } else if (!navigator.onLine) {
    [state, text] = ["offline", "Offline"];
  } else if (chat.open) {
    [state, text] = ["connected", "Connected"];
  } else if (chat.retry) {
    [state, text] = ["reconnecting", "Reconnecting"];
    countdown = ` in ${Math.max(0, Math.ceil((chat.retry.at - Date.now()) / 1000))} s`;
  }
  // Written only when changed: the indicator is a live region.
  if (indicator.dataset.state !== state) indicator.dataset.state = state;
  const [label, seconds] = indicator.children;
  if (label.textContent !== text) label.textContent = text;
  if (seconds.textContent !== countdown) seconds.textContent = countdown;
}
setInterval(showConnection, 250);

document.addEventListener("htmx:wsConnecting", () => {
  chat.open = chat.closed = false;
  chat.retry = null;
  showConnection();
});

document.addEventListener("htmx:wsOpen", (event) => {
  chat.socket = event.detail.socketWrapper;
  chat.open = chat.everOpened = true;
  chat.retry = null;
  showConnection();
});

document.addEventListener("htmx:wsClose", (event) => {
  chat.socket = event.detail.socketWrapper;
  chat.open = false;
  const code = event.detail.event.code;
  if (!chat.retry && [1001, 1009].includes(code) && event.target.isConnected) {
    // The extension tries again only after an abnormal close (1006, 1011-1013); a server that
    // went away or refused a frame too big is tried again too.
    const delay = htmx.config.wsReconnectDelay(0); // before setTimeout is looked up
    setTimeout(() => chat.socket.reconnect(), delay);
  }
  // Nothing tries again after a normal close, or 4404 (the conversation is gone).
  chat.closed = !chat.retry;
  if (chat.sent !== null && !chat.queued) {
    // Sent, but whether it arrived is unknown: the list shown on reconnect says; the text stays.
    chat.sent = null;
    composerNote("The connection dropped before this message was confirmed.");
  }
  showConnection();
});

window.addEventListener("online", () => {
  if (chat.retry && !chat.open) {
    clearTimeout(chat.retry.timer);
    const { callback } = chat.retry;
    chat.retry = null;
    callback();
  }
  showConnection();
});
window.addEventListener("offline", showConnection);

document.addEventListener("htmx:wsConfigSend", (event) => {
  if (event.target.id !== "composer" || event.detail.errors.length) return;
  if (chat.sent !== null) {
    event.preventDefault(); // one message at a time: the last one is not acknowledged yet
    return;
  }
  chat.sent = event.detail.parameters.message;
  chat.queued = !chat.open;
  // Offline with the socket not yet closed: the frame waits in the browser, so say so too.
  const waiting = chat.queued || !navigator.onLine;
  composerNote(waiting ? "Not sent yet: it goes as soon as the connection is back." : "");
  composerBox()?.focus();
});

document.addEventListener("htmx:wsAfterSend", (event) => {
  if (event.target.id !== "composer" || !chat.queued) return;
  chat.queued = false;
  if (navigator.onLine) composerNote("");
});

document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const id = event.detail.target.id;
  if (id === "composer-ack" && chat.sent !== null) {
    // Accepted: clear what was sent, keeping anything typed after it.
    const box = composerBox();
    if (box && box.value.startsWith(chat.sent)) box.value = box.value.slice(chat.sent.length);
    chat.sent = null;
    composerNote("");
  } else if (id === "chat-error" && event.detail.fragment.textContent.trim()) {
    // Refused: the text stays in the box to be sent again.
    if (chat.sent !== null && !chat.queued) chat.sent = null;
  }
});

// Once no answer runs, an error that said one does ("still being written") no longer applies.
document.addEventListener("htmx:wsAfterMessage", () => {
  if (document.querySelector("#run-controls form")) return;
  const error = document.querySelector('#chat-error[data-clears="answer-end"]');
  if (error) {
    error.textContent = "";
    delete error.dataset.clears;
  }
});

// Keys (keys.js): Enter sends, Shift+Enter starts a new line (stream.js has the view follow the
// newest text).
export function sendOnEnter(event) {
  const field = event.target;
  if (field.name === "message" && event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    field.form.requestSubmit();
  }
}

// Esc stops a running answer; Stop leaves the focus in the box.
export function stopOnEscape(event) {
  const stop = document.querySelector("#run-controls form");
  if (event.key === "Escape" && !event.defaultPrevented && stop) {
    event.preventDefault();
    stop.requestSubmit();
  }
}

document.addEventListener("submit", (event) => {
  if (event.target.closest("#run-controls")) composerBox()?.focus();
});

// The server closes the socket with 4404 when the conversation is gone (or not yours).
document.addEventListener("htmx:wsClose", (event) => {
  if (event.detail.event.code === 4404) {
    const error = document.getElementById("chat-error");
    if (error) error.textContent = "This conversation no longer exists.";
  }
});
