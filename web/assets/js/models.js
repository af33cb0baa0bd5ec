// Models page: the loaded model's card, the model list with load (live progress) and unload,
// LoRAs and chat templates. Admin controls exist only for an admin key.
import { ApiError } from "./api.js";
import { $, describeError, el, formatNumber, say } from "./dom.js";

const CARD_FACTS = [
  ["Engine", (p) => p.backend],
  ["Context length", (p) => tokens(p.max_seq_len)],
  ["Cache size", (p) => tokens(p.cache_size)],
  ["Cache mode", (p) => p.cache_mode],
  ["Batch size", (p) => p.max_batch_size],
  ["Chunk size", (p) => p.chunk_size],
  ["Chat template", (p) => p.prompt_template],
  ["Weights", (p) => p.dtype],
  ["Device", (p) => p.device],
  ["Draft model", (p) => p.draft],
  ["LoRAs", (p) => (p.loras && p.loras.length ? p.loras.join(", ") : null)],
];

function tokens(value) {
  return value === null || value === undefined ? null : `${formatNumber(value, 0)} tokens`;
}

/** LoRA lists come as names or as cards ({id, scaling}); both are shown. */
function loraName(entry) {
  return typeof entry === "string" ? entry : entry.id || entry.name;
}

export class ModelsPage {
  constructor(session) {
    this.api = session.api;
    this.admin = session.admin;
    this.signal = session.signal;
    this.loaded = null; // the loaded model's card, or null
    this.loading = false;
    const on = (id, handler) => $(id).addEventListener("click", handler, { signal: this.signal });
    on("model-unload", () => this.unload());
    on("lora-unload", () => this.unloadLoras());
    on("template-switch", () => this.switchTemplate());
    on("template-unload", () => this.unloadTemplate());
  }

  activate() {
    this.refresh();
  }

  deactivate() {}

  close() {
    for (const id of ["model-card", "model-list", "lora-list", "template-select"]) {
      $(id).replaceChildren();
    }
    for (const id of ["lora-message", "template-message", "load-status"]) say($(id), "");
    $("load-status-card").hidden = true;
    $("model-unload").hidden = true;
    $("template-current").textContent = "—";
  }

  async refresh() {
    await this.showCard();
    await Promise.all([this.showList(), this.showLoras(), this.showTemplates()]);
  }

  async showCard() {
    const target = $("model-card");
    try {
      this.loaded = await this.api.get("v1/model", this.signal);
    } catch (error) {
      this.loaded = null;
      if (!(error instanceof ApiError && error.status === 503)) {
        target.replaceChildren(el("p", { class: "error", text: describeError(error) }));
        $("model-unload").hidden = true;
        return;
      }
    }
    $("model-unload").hidden = !this.admin || !this.loaded;
    if (!this.loaded) {
      target.replaceChildren(el("p", { class: "muted", text: "No model is loaded." }));
      return;
    }
    const params = this.loaded.parameters || {};
    const facts = el("dl", { class: "facts" });
    facts.append(el("dt", { text: "Name" }), el("dd", { text: this.loaded.id, id: "loaded-name" }));
    for (const [label, pick] of CARD_FACTS) {
      const value = pick(params);
      if (value === null || value === undefined || value === "") continue;
      facts.append(el("dt", { text: label }), el("dd", { text: String(value) }));
    }
    target.replaceChildren(facts);
  }

  async showList() {
    const list = $("model-list");
    let models;
    try {
      models = (await this.api.get("v1/models", this.signal)).data;
    } catch (error) {
      list.replaceChildren(el("li", { class: "error", text: describeError(error) }));
      return;
    }
    if (!models.length) {
      list.replaceChildren(el("li", { class: "muted", text: "No models." }));
      return;
    }
    const loadedId = this.loaded ? this.loaded.id : null;
    list.replaceChildren(
      ...models.map((model) => {
        const name = el("span", { class: "item-name", text: model.id });
        const row = el("li", { "data-model": model.id }, name);
        if (model.id === loadedId) row.append(el("span", { class: "badge ok", text: "loaded" }));
        else if (this.admin) {
          const button = el("button", {
            type: "button",
            class: "small load-model",
            text: "Load",
            "aria-label": `Load ${model.id}`,
            disabled: this.loading,
          });
          button.addEventListener("click", () => this.load(model.id));
          row.append(button);
        }
        return row;
      }),
    );
  }

  /** Load `name`, following the progress events of POST /v1/model/load. */
  async load(name) {
    if (this.loading) return;
    this.loading = true;
    for (const button of document.querySelectorAll(".load-model")) button.disabled = true;
    $("model-unload").disabled = true;
    const card = $("load-status-card");
    const bar = $("load-progress");
    const status = $("load-status");
    card.hidden = false;
    $("load-title").textContent = `Loading ${name}`;
    $("load-label").textContent = `Progress of ${name}`;
    bar.max = 1;
    bar.value = 0;
    say(status, "Starting…");
    const events = this.api.stream("v1/model/load", { model_name: name }, this.signal);
    try {
      for await (const event of events) {
        if (!event.modules) continue;
        bar.max = event.modules;
        bar.value = event.module;
        say(status, `${event.model_type}: ${event.module} / ${event.modules} modules`);
      }
      bar.value = bar.max;
      say(status, `Loaded ${name}.`);
    } catch (error) {
      if (error.name === "AbortError") return;
      say(status, `Loading ${name} failed: ${describeError(error)}`, true);
    } finally {
      this.loading = false;
      $("model-unload").disabled = false;
    }
    await this.refresh();
  }

  async unload() {
    const status = $("load-status");
    $("load-status-card").hidden = false;
    $("load-title").textContent = "Unloading";
    $("model-unload").disabled = true;
    try {
      await this.api.post("v1/model/unload", {}, this.signal);
      say(status, "The model was unloaded.");
    } catch (error) {
      say(status, `Unloading failed: ${describeError(error)}`, true);
    } finally {
      $("model-unload").disabled = false;
    }
    await this.refresh();
  }

  /**
   * The `data` list at `path`, a feature the server may lack; null when it failed. The
   * `prefix`-unavailable note shows for a 404, the `prefix`-message for other errors, and the
   * `prefix`-controls are hidden (on success the caller shows them as fits).
   */
  async optionalList(path, prefix) {
    try {
      const data = (await this.api.get(path, this.signal)).data || [];
      $(`${prefix}-unavailable`).hidden = true;
      return data;
    } catch (error) {
      const missing = error instanceof ApiError && error.status === 404;
      $(`${prefix}-unavailable`).hidden = !missing;
      $(`${prefix}-controls`).hidden = true;
      if (!missing) say($(`${prefix}-message`), describeError(error), true);
      return null;
    }
  }

  async showLoras() {
    const list = $("lora-list");
    const loras = await this.optionalList("v1/loras", "lora");
    if (!loras) {
      list.replaceChildren();
      return;
    }
    $("lora-controls").hidden = !this.admin;
    const active = new Set((this.loaded && this.loaded.parameters?.loras) || []);
    if (!loras.length) {
      list.replaceChildren(el("li", { class: "muted", text: "No LoRAs." }));
      return;
    }
    list.replaceChildren(
      ...loras.map((entry) => {
        const name = loraName(entry);
        const row = el("li", {}, el("span", { class: "item-name", text: name }));
        if (active.has(name)) row.append(el("span", { class: "badge ok", text: "loaded" }));
        else if (this.admin && this.loaded) {
          const button = el("button", {
            type: "button",
            class: "small",
            text: "Load",
            "aria-label": `Load LoRA ${name}`,
          });
          button.addEventListener("click", () => this.loadLora(name));
          row.append(button);
        }
        return row;
      }),
    );
  }

  async loadLora(name) {
    const scaling = Number($("lora-scaling").value || 1);
    await this.act(
      $("lora-message"),
      () => this.api.post("v1/lora/load", { loras: [{ name, scaling }] }, this.signal),
      `Loaded LoRA ${name}.`,
    );
  }

  async unloadLoras() {
    await this.act(
      $("lora-message"),
      () => this.api.post("v1/lora/unload", {}, this.signal),
      "LoRAs unloaded.",
    );
  }

  async showTemplates() {
    const current = this.loaded?.parameters?.prompt_template || null;
    $("template-current").textContent = current || (this.loaded ? "none" : "—");
    const names = await this.optionalList("v1/templates", "template");
    if (!names) return;
    $("template-controls").hidden = !this.admin || !this.loaded;
    const options = names.map((name) =>
      el("option", { value: name, text: name, selected: name === current }),
    );
    if (!options.length) options.push(el("option", { value: "", text: "(no templates)" }));
    $("template-select").replaceChildren(...options);
    $("template-switch").disabled = !names.length;
  }

  async switchTemplate() {
    const name = $("template-select").value;
    if (!name) return;
    await this.act(
      $("template-message"),
      () => this.api.post("v1/template/switch", { prompt_template_name: name }, this.signal),
      `Now using the ${name} template.`,
    );
  }

  async unloadTemplate() {
    await this.act(
      $("template-message"),
      () => this.api.post("v1/template/unload", {}, this.signal),
      "The chat template was unloaded.",
    );
  }

  /** Run one admin action, say how it went, and show the new state. */
  async act(message, action, done) {
    say(message, "Working…");
    try {
      await action();
      say(message, done);
    } catch (error) {
      if (error.name === "AbortError") return;
      say(message, describeError(error), true);
    }
    await this.refresh();
  }
}
