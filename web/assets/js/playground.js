// Playground page: streamed chat and raw completions, samplers and presets, timings, and the
// last request as a curl command.
import { absoluteUrl } from "./api.js";
import { $, describeError, el, formatNumber, say, tablist } from "./dom.js";
import { curlCommand } from "./curl.js";

const CHAT_PATH = "v1/chat/completions";
const COMPLETION_PATH = "v1/completions";

/** The sampler fields that are filled in, as numbers, plus the free-form JSON parameters. */
export function samplerValues(form, extraText) {
  const values = {};
  for (const input of form.querySelectorAll(".field-grid input")) {
    if (input.value.trim() === "") continue;
    const value = Number(input.value);
    const label = form.querySelector(`label[for="${input.id}"]`).textContent;
    if (!Number.isFinite(value)) throw new Error(`${label} must be a number.`);
    if ("int" in input.dataset && !Number.isInteger(value)) {
      throw new Error(`${label} must be a whole number.`);
    }
    values[input.name] = value;
  }
  if (extraText.trim()) {
    let extra;
    try {
      extra = JSON.parse(extraText);
    } catch (error) {
      throw new Error(`More parameters is not valid JSON: ${error.message}`);
    }
    if (!extra || typeof extra !== "object" || Array.isArray(extra)) {
      throw new Error("More parameters must be a JSON object.");
    }
    Object.assign(values, extra);
  }
  return values;
}

/** "TTFT 120 ms · 41.3 tokens/s · 57 tokens" for one answer. */
function describeTimings({ started, first, ended, tokens, exact, outcome, finish }) {
  const parts = [];
  if (first !== null) parts.push(`TTFT ${formatNumber(first - started, 0)} ms`);
  if (first !== null && tokens > 1 && ended > first) {
    const rate = (tokens - 1) / ((ended - first) / 1000);
    parts.push(`${formatNumber(rate, 1)} tokens/s`);
  }
  parts.push(`${exact ? "" : "≈"}${tokens} token${tokens === 1 ? "" : "s"}`);
  if (outcome === "stopped") parts.push("stopped");
  else if (outcome === "error") parts.push("failed");
  else if (finish === "length") parts.push("max tokens reached");
  return parts.join(" · ");
}

/** A file's content as a data: URI (how an image goes into a chat message). */
function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class PlaygroundPage {
  constructor(session) {
    this.api = session.api;
    this.admin = session.admin;
    this.signal = session.signal;
    this.history = []; // the chat so far, as OpenAI messages
    this.running = null; // the AbortController of the answer being streamed
    this.modelId = null;
    const signal = this.signal;
    const on = (id, type, handler) => $(id).addEventListener(type, handler, { signal });

    const modes = $("playground-modes");
    this.markMode = tablist(modes, (tab) => this.showMode(tab.dataset.mode), signal);
    on("chat-form", "submit", (event) => {
      event.preventDefault();
      this.sendChat();
    });
    on("completion-form", "submit", (event) => {
      event.preventDefault();
      this.sendCompletion();
    });
    on("chat-input", "keydown", (event) => this.submitOnCtrlEnter(event, "chat-form"));
    on("completion-prompt", "keydown", (event) =>
      this.submitOnCtrlEnter(event, "completion-form"),
    );
    on("chat-stop", "click", () => this.stop());
    on("completion-stop", "click", () => this.stop());
    on("chat-clear", "click", () => this.clearChat());
    on("curl-copy", "click", () => this.copyCurl());
    on("sampler-form", "submit", (event) => event.preventDefault());
    on("preset-apply", "click", () => this.applyPreset());
  }

  activate() {
    this.findModel();
    this.showPresets();
  }

  deactivate() {}

  close() {
    this.stop();
    this.clearChat();
    this.showMode("chat");
    $("completion-output").textContent = "";
    $("completion-stats").textContent = "";
    $("curl-command").textContent = "Send something first.";
    $("preset-select").replaceChildren();
    for (const id of ["playground-error", "preset-message"]) say($(id), "");
  }

  showMode(mode) {
    this.markMode($(`mode-${mode}`));
    $("pane-chat").hidden = mode !== "chat";
    $("pane-completion").hidden = mode !== "completion";
  }

  submitOnCtrlEnter(event, formId) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $(formId).requestSubmit();
    }
  }

  async findModel() {
    try {
      this.modelId = (await this.api.get("v1/model", this.signal)).id;
    } catch {
      this.modelId = null; // the answer itself will say why there is none
    }
  }

  /**
   * The request body: the model (when known), the samplers, then `fields`; null, with the
   * reason shown, when the sampler form does not make one.
   */
  body(fields) {
    let values;
    try {
      values = samplerValues($("sampler-form"), $("s-extra").value);
    } catch (error) {
      say($("playground-error"), error.message, true);
      return null;
    }
    return {
      ...(this.modelId ? { model: this.modelId } : {}),
      ...values,
      ...fields,
      stream: true,
      stream_options: { include_usage: true },
    };
  }

  clearChat() {
    this.history = [];
    $("chat-log").replaceChildren();
    $("chat-image").value = "";
  }

  async sendChat() {
    if (this.running) return;
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text) return;
    const picker = $("chat-image");
    const file = picker.files[0];
    let content = text;
    if (file) {
      let url;
      try {
        url = await readAsDataUrl(file);
      } catch (error) {
        say($("playground-error"), `Cannot read ${file.name}: ${describeError(error)}`, true);
        return;
      }
      content = [
        { type: "image_url", image_url: { url } },
        { type: "text", text },
      ];
    }
    const system = $("system-prompt").value.trim();
    const messages = [
      ...(system ? [{ role: "system", content: system }] : []),
      ...this.history,
      { role: "user", content },
    ];
    const body = this.body({ messages });
    if (!body) return;
    this.history.push({ role: "user", content });
    input.value = "";
    picker.value = "";
    const log = $("chat-log");
    log.append(this.bubble("user", "You", file ? `[image: ${file.name}] ${text}` : text));
    const reply = this.bubble("assistant", "Assistant", "");
    log.append(reply);
    const textNode = reply.querySelector(".text");
    const answer = await this.stream(
      CHAT_PATH,
      body,
      (choice) => choice.delta?.content,
      (piece) => {
        textNode.textContent += piece;
        reply.scrollIntoView({ block: "nearest" });
      },
      reply.querySelector(".stats"),
      ["chat-send", "chat-stop"],
    );
    if (answer) this.history.push({ role: "assistant", content: answer });
    else if (!textNode.textContent) textNode.textContent = "(no answer)";
  }

  bubble(role, label, text) {
    return el(
      "li",
      { class: role, "data-role": role },
      el("span", { class: "role", text: label }),
      el("span", { class: "text", text }),
      el("p", { class: "stats" }),
    );
  }

  async sendCompletion() {
    if (this.running) return;
    const prompt = $("completion-prompt").value;
    if (!prompt.trim()) return;
    const body = this.body({ prompt });
    if (!body) return;
    const output = $("completion-output");
    output.textContent = "";
    await this.stream(
      COMPLETION_PATH,
      body,
      (choice) => choice.text,
      (piece) => {
        output.textContent += piece;
      },
      $("completion-stats"),
      ["completion-send", "completion-stop"],
    );
  }

  /**
   * Stream one answer: `pick` finds the text in a chunk's first choice, `show` adds it to the
   * page. Returns the whole text (partial when stopped). Timings go to `statsNode`.
   */
  async stream(path, body, pick, show, statsNode, [sendId, stopId]) {
    const controller = new AbortController();
    this.running = controller;
    const error = $("playground-error");
    say(error, "");
    $(sendId).disabled = true;
    $(stopId).disabled = false;
    $("curl-command").textContent = curlCommand(absoluteUrl(path), body, true);
    statsNode.textContent = "generating…";
    const timing = { started: performance.now(), first: null, ended: null, tokens: 0 };
    let text = "";
    let usage = null;
    let finish = null;
    let outcome = "done";
    try {
      for await (const chunk of this.api.stream(path, body, controller.signal)) {
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        const piece = pick(choice);
        if (piece) {
          if (timing.first === null) timing.first = performance.now();
          timing.tokens += 1;
          text += piece;
          show(piece);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    } catch (failure) {
      outcome = failure.name === "AbortError" ? "stopped" : "error";
      if (outcome === "error") say(error, describeError(failure), true);
    } finally {
      timing.ended = performance.now();
      this.running = null;
      $(sendId).disabled = false;
      $(stopId).disabled = true;
    }
    const exact = usage && Number.isInteger(usage.completion_tokens);
    if (exact) timing.tokens = usage.completion_tokens;
    statsNode.textContent = describeTimings({ ...timing, exact, outcome, finish });
    statsNode.dataset.outcome = outcome;
    return text;
  }

  /** Abort the answer in flight: the connection closes and the server cancels the job. */
  stop() {
    if (this.running) this.running.abort();
  }

  async copyCurl() {
    const text = $("curl-command").textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("curl-copy").textContent = "Copied";
    } catch {
      // no clipboard (plain http on another host): select it for the user to copy
      getSelection().selectAllChildren($("curl-command"));
      $("curl-copy").textContent = "Selected";
    }
    setTimeout(() => {
      $("curl-copy").textContent = "Copy";
    }, 1500);
  }

  async showPresets() {
    const message = $("preset-message");
    let answer;
    try {
      answer = await this.api.get("v1/sampling/override/list", this.signal);
    } catch (error) {
      if (error.name !== "AbortError") say(message, describeError(error), true);
      return;
    }
    const selected = answer.selected_preset || null;
    $("preset-current").textContent = selected || "none";
    $("preset-controls").hidden = !this.admin;
    if (!this.admin) return;
    const select = $("preset-select");
    select.replaceChildren(
      el("option", { value: "", text: "(none)", selected: !selected }),
      ...(answer.presets || []).map((name) =>
        el("option", { value: name, text: name, selected: name === selected }),
      ),
    );
  }

  async applyPreset() {
    const name = $("preset-select").value;
    const message = $("preset-message");
    try {
      if (name) await this.api.post("v1/sampling/override/switch", { preset: name }, this.signal);
      else await this.api.post("v1/sampling/override/unload", {}, this.signal);
      say(message, name ? `Preset ${name} applied.` : "Overrides cleared.");
    } catch (error) {
      if (error.name !== "AbortError") say(message, describeError(error), true);
    }
    await this.showPresets();
  }
}
