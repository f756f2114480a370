// whisperlite's web page: transcribe a file (streamed segments), chat with the loaded LLM,
// transcribe the microphone live, search a batch archive and play its hits, and have the LLM
// write chapters and a summary of a transcript or an episode, through the server's own routes
// (OpenAI-shaped ones, /v1/chapters, /v1/summarize and the live WebSocket). Plain browser
// JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "whisperlite.apiKey";
const WHISPER_NAME = "whisper-1";
const OUTPUTS = { srt: "application/x-subrip", vtt: "text/vtt", txt: "text/plain", json: "application/json" };

const panels = {};  // each panel's Chapters/Summary box: transcribe, search

const state = {
  job: null,        // AbortController of the running transcription
  outputs: null,    // {srt, vtt, txt, json} texts of the last transcription
  baseName: "transcript",
  mediaUrl: null,
  llm: null,        // the LLM's model name from /v1/models, or null
  history: [],      // chat messages [{role, content}]
  chat: null,       // AbortController of the running chat reply
  recorder: null,
  live: null,       // the running live stream {ws, stop()}, or null
  searchMedia: null, // {url, src}: the episode last fetched with the API key, as a blob URL
  segments: [],     // the last transcription's segments [{start, end, text}], for chapters and summaries
  insights: [],     // the Chapters/Summary boxes of each panel
};

// ---------- small helpers ----------

function showError(message) {
  const line = String(message).split("\n")[0];
  $("error").textContent = line;
  $("error").hidden = !line;
}

function clearError() { showError(""); }

function authHeaders(extra = {}) {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// One line from a failed response: the server's {"error": {"message"}} or the HTTP status.
async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) message = typeof body.error === "string" ? body.error : body.error.message || message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) {
    message += " (enter the API key above)";
    $("key-box").open = true;
  }
  return new Error(message);
}

// Yields the `data:` payload of each server-sent event in a fetch response body.
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    buffer = buffer.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
    if (done) return;
  }
}

// An error event inside a stream, in either shape the server may send.
function streamError(event) {
  if (event.error) return new Error(typeof event.error === "string" ? event.error : event.error.message);
  if (event.type === "error") return new Error(event.message || "the server reported an error");
  return null;
}

function clock(seconds) {
  const t = Math.max(0, seconds || 0);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  const ss = s.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${String(m).padStart(2, "0")}:${ss}`;
}

// Where to play from (a player that cannot play yet still sits at the time).
function seek(player, seconds) {
  player.currentTime = seconds;
  player.play().catch(() => { /* autoplay refused */ });
}

// YouTube's chapter stamps, as `whisperlite chapters` prints them: 12:34, or 1:02:03 when the
// recording is an hour long or longer.
function chapterTime(seconds, hours) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
  return hours ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${mm}:${ss}`;
}

// ---------- header: API key and health ----------

function setupKey() {
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    clearError();
    loadModels();
    showSearch();
  });
}

async function checkHealth() {
  try {
    const r = await fetch("/health");
    const body = await r.json().catch(() => ({}));
    if (r.ok) { $("health").textContent = "Ready"; loadModels(); showSearch(); return; }
    $("health").textContent = body.error ? `Models failed to load: ${body.error}` : "Loading models…";
    if (!body.error) setTimeout(checkHealth, 1000);
  } catch (e) {
    $("health").textContent = "Server not reachable";
    setTimeout(checkHealth, 3000);
  }
}

// ---------- tabs (ARIA tabs pattern: arrow keys move between tabs) ----------

function setupTabs() {
  // Tabs shown later (Search, once the server says it has an archive) join the keyboard cycle.
  const all = [...document.querySelectorAll('[role="tab"]')];
  const shown = () => all.filter((t) => !t.hidden);
  const select = (tab) => {
    for (const t of all) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  };
  all.forEach((tab) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const tabs = shown();
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      const target = tabs[(next + tabs.length) % tabs.length];
      select(target);
      target.focus();
    });
  });
}

// ---------- archive search (serve --archive DIR) ----------

async function showSearch() {
  if (!$("tab-search").hidden) return;
  try {
    const r = await fetch("/v1/archive", { headers: authHeaders() });
    if (r.ok) $("tab-search").hidden = false;  // 404: no archive served; 401: once a key is saved
  } catch (_) { /* unreachable: the health line says so */ }
}

function hitLine(hit) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  const where = document.createElement("span");
  where.className = "time";
  where.textContent = `${hit.episode} ${clock(hit.start)}`;
  button.append(where, " ", hit.speaker ? `[${hit.speaker}] ${hit.text}` : hit.text);
  button.addEventListener("click", () => playHit(hit).catch((e) => showError(`cannot play: ${e.message || e}`)));
  li.append(button);
  return li;
}

// The audio element cannot send the API key: with a key, the episode is fetched with it into a blob.
async function playHit(hit) {
  const player = $("search-player");
  let src = new URL(hit.media, location.href).href;
  if (localStorage.getItem(KEY_STORE)) {
    if (!state.searchMedia || state.searchMedia.url !== hit.media) {
      const r = await fetch(hit.media, { headers: authHeaders() });
      if (!r.ok) throw await failure(r);
      if (state.searchMedia) URL.revokeObjectURL(state.searchMedia.src);
      state.searchMedia = { url: hit.media, src: URL.createObjectURL(await r.blob()) };
    }
    src = state.searchMedia.src;
  }
  player.hidden = false;
  if (player.src !== src) {
    const loaded = new Promise((resolve, reject) => {
      player.addEventListener("loadedmetadata", resolve, { once: true });
      player.addEventListener("error", () => reject(new Error("the episode's audio did not load")), { once: true });
    });
    player.src = src;
    await loaded;
  }
  if (player.dataset.episode !== hit.episode) panels.search.reset(hit.episode);
  player.dataset.episode = hit.episode;
  seek(player, hit.start);
}

async function runSearch() {
  const q = $("search-q").value.trim();
  if (!q) return;
  clearError();
  $("search-status").textContent = "Searching…";
  const list = $("search-hits");
  list.replaceChildren();
  try {
    const r = await fetch(`/v1/search?q=${encodeURIComponent(q)}&limit=50`, { headers: authHeaders() });
    if (!r.ok) throw await failure(r);
    const body = await r.json();
    for (const hit of body.hits) list.append(hitLine(hit));
    const n = body.hits.length;
    $("search-status").textContent = n ? `${n} hit${n === 1 ? "" : "s"}: click one to play it` : `No hits for ${q}`;
  } catch (e) {
    $("search-status").textContent = "";
    showError(`search failed: ${e.message || e}`);
  }
}

// The segments of the episode playing, as the archive indexed them.
async function episodeTranscript() {
  const episode = $("search-player").dataset.episode;
  const r = await fetch(`/v1/archive/transcript?episode=${encodeURIComponent(episode)}`, { headers: authHeaders() });
  if (!r.ok) throw await failure(r);
  return (await r.json()).segments;
}

function setupSearch() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  panels.search = setupInsights("search", $("search-player"), episodeTranscript);
}

// ---------- transcription ----------

function setupTranscribe() {
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) transcribe(file);
    $("file").value = "";  // picking the same file again starts again
  });
  // The whole page takes a dropped file: a drop that misses the box would otherwise make the
  // browser leave the page to open the file.
  const drop = $("drop");
  document.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) transcribe(file);
  });
  $("cancel").addEventListener("click", () => state.job && state.job.abort());
  $("transcript").addEventListener("click", (e) => {
    const line = e.target.closest("button[data-start]");
    if (!line) return;
    seek($("player"), Number(line.dataset.start));
  });
  for (const button of $("downloads").querySelectorAll("button[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  panels.transcribe = setupInsights("transcribe", $("player"), () => state.segments);
  setupRecorder();
}

function setProgress(fraction, text) {
  const bar = $("progress");
  if (fraction === null) bar.removeAttribute("value"); else bar.value = Math.min(1, Math.max(0, fraction));
  $("progress-text").textContent = text;
}

function addLine(segment) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.start = segment.start;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(segment.start)} → ${clock(segment.end)}`;
  button.append(time, document.createTextNode(" " + segment.text.trim()));
  item.append(button);
  $("transcript").append(item);
}

async function transcribe(file) {
  if (state.job) state.job.abort();
  const job = new AbortController();
  state.job = job;
  clearError();
  state.outputs = null;
  state.baseName = (file.name || "recording").replace(/\.[^.]*$/, "") || "transcript";
  $("transcript").replaceChildren();
  state.segments = [];
  panels.transcribe.reset("");
  $("downloads").hidden = true;
  $("progress-box").hidden = false;
  $("cancel").hidden = false;

  const player = $("player");
  if (state.mediaUrl) URL.revokeObjectURL(state.mediaUrl);
  state.mediaUrl = URL.createObjectURL(file);
  player.src = state.mediaUrl;
  player.hidden = false;
  const duration = () => (Number.isFinite(player.duration) && player.duration > 0 ? player.duration : null);
  setProgress(null, `Uploading ${file.name || "recording"}…`);

  const form = new FormData();
  form.append("file", file, file.name || "recording.webm");
  form.append("model", WHISPER_NAME);
  form.append("stream", "true");
  form.append("outputs", Object.keys(OUTPUTS).join(","));
  const language = $("language").value.trim();
  if (language) form.append("language", language);

  let segments = 0;
  try {
    const response = await fetch("/v1/audio/transcriptions", {
      method: "POST", body: form, headers: authHeaders(), signal: job.signal,
    });
    if (!response.ok) throw await failure(response);
    setProgress(null, "Transcribing…");
    for await (const data of sseData(response)) {
      const event = JSON.parse(data);
      const error = streamError(event);
      if (error) throw error;
      if (event.type === "transcript.text.delta" && event.segment) {
        segments += 1;
        addLine(event.segment);
        state.segments.push({ start: event.segment.start, end: event.segment.end, text: event.segment.text });
        const total = duration();
        setProgress(total ? event.segment.end / total : null,
          `Transcribing… ${clock(event.segment.end)}${total ? " of " + clock(total) : ""}, ${segments} segment${segments === 1 ? "" : "s"}`);
      } else if (event.type === "transcript.text.done") {
        state.outputs = event.outputs || null;
        const lang = event.language ? `, language ${event.language}` : "";
        setProgress(1, segments
          ? `Done: ${segments} segment${segments === 1 ? "" : "s"}, ${clock(event.duration)} of audio${lang}.`
          : `Done: no speech in ${clock(event.duration)} of audio.`);
        $("downloads").hidden = !state.outputs;
        if (segments) panels.transcribe.reset(file.name || "the recording");
      }
    }
    if (!state.outputs && !job.signal.aborted) throw new Error("the transcription ended before it was done");
  } catch (e) {
    if (job.signal.aborted) setProgress(0, "Cancelled."); else { setProgress(0, "Failed."); showError(e.message); }
  } finally {
    if (state.job === job) { state.job = null; $("cancel").hidden = true; }
  }
}

function download(format) {
  const text = state.outputs && state.outputs[format];
  if (text === undefined || text === null) { showError(`no ${format.toUpperCase()} output from the server`); return; }
  const blob = new Blob([typeof text === "string" ? text : JSON.stringify(text, null, 2)], { type: OUTPUTS[format] });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.baseName}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ---------- chapters and summary (the server's LLM, POST /v1/chapters and /v1/summarize) ----------

// One panel's Chapters/Summary box (the page's template, its ids `${prefix}-…`), in the
// panel's #${prefix}-insights: `transcript()` gives the segments to
// send ({segments: [...]}, as /v1/chapters takes them), `player` is what a clicked line seeks.
function setupInsights(prefix, player, transcript) {
  const content = $("insights-template").content.cloneNode(true);
  for (const node of content.querySelectorAll("*")) {
    for (const name of ["id", "aria-describedby", "aria-labelledby"]) {
      const value = node.getAttribute(name);
      if (value) node.setAttribute(name, value.replace(/^PANEL-/, `${prefix}-`));
    }
  }
  $(`${prefix}-insights`).append(content);
  const el = (name) => $(`${prefix}-${name}`);
  const buttons = { chapters: el("chapters"), summarize: el("summary") };
  let running = false;
  let subject = "";
  let epoch = 0;  // bumped by each new transcript: an answer about an older one is dropped

  const lineButton = (start, label, text) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.start = start;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = label;
    button.append(time, " ", text);
    button.addEventListener("click", () => seek(player, start));
    li.append(button);
    return li;
  };

  const showChapters = (chapters) => {
    const hours = chapters.length > 0 && chapters[chapters.length - 1].start >= 3600;
    el("chapter-list").replaceChildren(...chapters.map((c) => lineButton(c.start, chapterTime(c.start, hours), c.title)));
    el("chapters-box").hidden = false;
    return `${chapters.length} chapter${chapters.length === 1 ? "" : "s"}.`;
  };

  const showSummary = (body) => {
    el("summary-text").textContent = body.summary;
    const hours = body.quotes.some((q) => q.start >= 3600);
    el("quotes").replaceChildren(...body.quotes.map((q) => lineButton(
      q.start, chapterTime(q.start, hours), `${q.speaker ? q.speaker + ": " : ""}\u201c${q.text}\u201d`)));
    el("quotes-title").hidden = body.quotes.length === 0;
    el("summary-box").hidden = false;
    return `Summary with ${body.quotes.length} key quote${body.quotes.length === 1 ? "" : "s"}.`;
  };

  const setBusy = (busy, kind) => {
    running = busy;
    for (const [k, b] of Object.entries(buttons)) {
      b.disabled = busy || !state.llm;
      if (busy && k === kind) b.setAttribute("aria-busy", "true"); else b.removeAttribute("aria-busy");
    }
    el("insights-progress").hidden = !busy;
  };

  const run = async (kind) => {
    if (running || !state.llm) return;
    const button = buttons[kind];
    const hadFocus = document.activeElement === button;
    clearError();
    setBusy(true, kind);
    el("insights-status").textContent = kind === "chapters" ? "Finding chapters and writing their titles…"
      : "Summarizing…";
    let first = null;
    const asked = epoch;
    try {
      const segments = await transcript();
      const r = await fetch(`/v1/${kind}`, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ segments }),
      });
      if (!r.ok) throw await failure(r);
      const body = await r.json();
      if (asked !== epoch) return;
      el("insights-status").textContent = kind === "chapters" ? showChapters(body.chapters) : showSummary(body);
      first = el(kind === "chapters" ? "chapter-list" : "quotes").querySelector("button");
    } catch (e) {
      if (asked !== epoch) return;
      el("insights-status").textContent = "Failed.";
      showError(`${kind === "chapters" ? "chapters" : "summary"} failed: ${e.message || e}`);
    } finally {
      setBusy(false);
      // The button was disabled while the LLM worked, which took the keyboard focus from it:
      // give it to the first line of the answer (or back to the button).
      if (hadFocus) (first || button).focus();
    }
  };

  for (const [kind, button] of Object.entries(buttons)) button.addEventListener("click", () => run(kind));

  const box = {
    // A new transcript (`name` says whose): the old chapters and summary go.
    reset(name) {
      subject = name;
      epoch += 1;
      el("chapters-box").hidden = true;
      el("summary-box").hidden = true;
      el("chapter-list").replaceChildren();
      el("quotes").replaceChildren();
      el("insights-status").textContent = "";
      el("insights").hidden = !name;
      box.update();
    },
    update() {
      if (!running) setBusy(false);
      el("insights-note").textContent = state.llm
        ? `Chapters and a summary of ${subject}, written by ${state.llm}.`
        : "Chapters and summaries need an LLM: start the server with --llm NAME.";
    },
  };
  state.insights.push(box);
  return box;
}

// ---------- microphone ----------

function setupRecorder() {
  const button = $("record");
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder)) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    if (state.recorder) { state.recorder.stop(); return; }
    clearError();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      showError(`microphone not available: ${e.message || e.name}`);
      return;
    }
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.addEventListener("dataavailable", (e) => e.data.size && chunks.push(e.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((t) => t.stop());
      state.recorder = null;
      button.textContent = "Record from microphone";
      button.setAttribute("aria-pressed", "false");
      const type = recorder.mimeType || "audio/webm";
      const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      if (chunks.length) transcribe(new File(chunks, `recording.${extension}`, { type }));
    });
    recorder.start();
    state.recorder = recorder;
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
  });
}

// ---------- chat ----------

// The LLM's name as chat requests give it: llama.cpp's /props says it exactly (`model_alias`),
// where /v1/models lists it among the Whisper model's names. 404 there means no LLM is loaded.
async function loadModels() {
  state.llm = null;
  let status = "No LLM is loaded: start the server with --llm NAME to chat.";
  try {
    const r = await fetch("/props", { headers: authHeaders() });
    if (r.ok) state.llm = (await r.json()).model_alias || null;
    else if (r.status !== 404) throw await failure(r);
  } catch (e) {
    status = `Chat is unavailable: ${e.message}`;
    showError(e.message);
  }
  $("chat-model").textContent = state.llm ? `Chatting with ${state.llm}.` : status;
  $("send").disabled = !state.llm;
  for (const box of state.insights) box.update();
}

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = `message ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : state.llm || "Assistant";
  const body = document.createElement("p");
  body.textContent = text;
  box.append(who, body);
  $("messages").append(box);
  box.scrollIntoView({ block: "end" });
  return body;
}

async function sendChat() {
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text || !state.llm || state.chat) return;
  clearError();
  prompt.value = "";
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  const chat = new AbortController();
  state.chat = chat;
  $("send").disabled = true;
  $("stop").hidden = false;
  let answer = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: state.llm, messages: state.history, stream: true }),
      signal: chat.signal,
    });
    if (!response.ok) throw await failure(response);
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      const error = streamError(event);
      if (error) throw error;
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        reply.textContent = answer;
        reply.scrollIntoView({ block: "end" });
      }
    }
  } catch (e) {
    if (!chat.signal.aborted) showError(e.message);
  } finally {
    reply.removeAttribute("aria-busy");
    if (!answer) reply.textContent = chat.signal.aborted ? "(stopped)" : "(no reply)";
    if (answer) state.history.push({ role: "assistant", content: answer });
    else state.history.pop();  // a turn without a reply is not kept: the next one starts clean
    state.chat = null;
    $("send").disabled = !state.llm;
    $("stop").hidden = true;
    prompt.focus();
  }
}

function setupChat() {
  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); sendChat(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendChat(); }
  });
  $("stop").addEventListener("click", () => state.chat && state.chat.abort());
  $("clear").addEventListener("click", () => {
    if (state.chat) state.chat.abort();
    state.history = [];
    $("messages").replaceChildren();
    $("prompt").focus();
  });
}

// ---------- live: the microphone over the WebSocket ----------

// An AudioWorklet (loaded from a Blob URL: no extra file) that turns the microphone into 100-ms
// frames of 16 kHz s16le: each output sample is the mean of the input samples of its 1/16000 s
// (a box filter: enough against aliasing for speech), so any device rate works.
const LIVE_WORKLET = `
class Pcm16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;
    this.index = 0;       // input samples seen
    this.bucket = 0;      // the output sample being summed
    this.sum = 0;
    this.count = 0;
    this.frame = new Int16Array(1600);
    this.used = 0;
  }
  emit(value) {
    this.frame[this.used++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
    if (this.used === this.frame.length) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(1600);
      this.used = 0;
    }
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const bucket = Math.floor(this.index++ / this.ratio);
      if (bucket !== this.bucket && this.count) {
        const mean = this.sum / this.count;
        for (let b = this.bucket; b < bucket; b++) this.emit(mean);
        this.sum = 0;
        this.count = 0;
      }
      this.bucket = bucket;
      this.sum += channel[i];
      this.count++;
    }
    return true;
  }
}
registerProcessor("pcm16k", Pcm16k);
`;

function liveSupported() {
  return Boolean(window.AudioWorkletNode && window.WebSocket && navigator.mediaDevices
    && navigator.mediaDevices.getUserMedia);
}

function liveUrl() {
  const key = localStorage.getItem(KEY_STORE);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/audio/live${key ? "?api_key=" + encodeURIComponent(key) : ""}`;
}

function setLiveRunning(running) {
  $("live-start").hidden = running;
  $("live-stop").hidden = !running;
  $("live-language").disabled = running;
}

async function startLive() {
  if (state.live) return;
  clearError();
  $("live-final").textContent = "";
  $("live-partial").textContent = "";
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError(`microphone not available: ${e.message || e.name}`);
    return;
  }
  const context = new AudioContext();
  const moduleUrl = URL.createObjectURL(new Blob([LIVE_WORKLET], { type: "text/javascript" }));
  try {
    await context.audioWorklet.addModule(moduleUrl);
  } catch (e) {
    media.getTracks().forEach((t) => t.stop());
    context.close().catch(() => {});
    throw e;
  } finally {
    URL.revokeObjectURL(moduleUrl);
  }
  const source = context.createMediaStreamSource(media);
  const worklet = new AudioWorkletNode(context, "pcm16k", { numberOfInputs: 1, numberOfOutputs: 0 });
  const ws = new WebSocket(liveUrl());
  ws.binaryType = "arraybuffer";
  let finalText = "";
  let failed = false;
  const stopMicrophone = () => {
    worklet.port.onmessage = null;
    source.disconnect();
    media.getTracks().forEach((t) => t.stop());
    context.close().catch(() => {});
  };
  const live = {
    ws,
    stop() {  // the end of the audio: the server makes the rest final, sends `done` and closes
      stopMicrophone();
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
      $("live-status").textContent = "Finishing…";
      $("live-stop").hidden = true;
    },
  };
  state.live = live;
  setLiveRunning(true);
  $("live-status").textContent = "Connecting…";
  ws.addEventListener("open", () => {
    const config = { model: WHISPER_NAME };
    const language = $("live-language").value.trim();
    if (language) config.language = language;
    ws.send(JSON.stringify(config));
    worklet.port.onmessage = (e) => { if (ws.readyState === WebSocket.OPEN) ws.send(e.data); };
    source.connect(worklet);
  });
  ws.addEventListener("message", (e) => {
    const event = JSON.parse(e.data);
    if (event.type === "ready") {
      $("live-status").textContent = "Listening…";
    } else if (event.type === "final" && event.text) {
      // appended, not rewritten: a screen reader announces only the new words
      $("live-final").append(document.createTextNode((finalText ? " " : "") + event.text));
      finalText += (finalText ? " " : "") + event.text;
      $("live-partial").textContent = "";
    } else if (event.type === "partial") {
      $("live-partial").textContent = event.text ? (finalText ? " " : "") + event.text : "";
    } else if (event.type === "done") {
      $("live-partial").textContent = "";
      $("live-status").textContent = `Stopped: ${clock(event.duration)} of audio.`;
    } else if (event.type === "error") {
      failed = true;
      showError(event.error && event.error.message);
    }
  });
  ws.addEventListener("close", (e) => {
    stopMicrophone();
    if (state.live === live) state.live = null;
    setLiveRunning(false);
    if (e.code !== 1000 && !failed) showError(e.reason || `the live connection closed (${e.code})`);
    if (e.code === 1008 && /API key/.test(e.reason)) $("key-box").open = true;
    if (e.code !== 1000) $("live-status").textContent = "Stopped.";
  });
}

function setupLive() {
  if (!liveSupported()) return;  // the tab stays hidden
  $("tab-live").hidden = false;
  $("live-start").addEventListener("click", () => {
    startLive().catch((e) => { showError(`live transcription failed: ${e.message || e}`); });
  });
  $("live-stop").addEventListener("click", () => state.live && state.live.stop());
}

setupKey();
setupLive();
setupTabs();
setupTranscribe();
setupChat();
setupSearch();
checkHealth();
