// Entry point: sign-in, the session, and the three pages (Models, Playground, Server).
import { Api, ApiError } from "./api.js";
import { $, describeError, say, tablist } from "./dom.js";
import { ModelsPage } from "./models.js";
import { PlaygroundPage } from "./playground.js";
import { ServerPage } from "./server.js";

const KEY_STORAGE = "serval.key";
const PAGES = { models: ModelsPage, playground: PlaygroundPage, server: ServerPage };
const DEFAULT_PAGE = "models";

/** One signed-in key: its API client, its level, and the pages built for it. */
class Session {
  constructor(api, admin) {
    this.api = api;
    this.admin = admin;
    this.lifetime = new AbortController();
    this.pages = {};
    this.current = null;
    for (const [name, Page] of Object.entries(PAGES)) this.pages[name] = new Page(this);
  }

  get signal() {
    return this.lifetime.signal;
  }

  show(name) {
    if (!(name in this.pages)) name = DEFAULT_PAGE;
    if (this.current === name) return name;
    if (this.current) this.pages[this.current].deactivate();
    this.current = name;
    for (const page of Object.keys(this.pages)) $(`page-${page}`).hidden = page !== name;
    this.pages[name].activate();
    return name;
  }

  close() {
    this.lifetime.abort();
    for (const page of Object.values(this.pages)) page.close();
  }
}

let session = null;
const markTab = tablist($("tabs"), (tab) => openPage(tab.dataset.page));

function openPage(name) {
  if (!session) return;
  const shown = session.show(name);
  markTab($(`tab-${shown}`));
  if (location.hash !== `#${shown}`) history.replaceState(null, "", `#${shown}`);
}

/** Ask the server what `key` may do; sign in with it, or throw. */
async function signIn(key) {
  const api = new Api(key);
  const answer = await api.get("v1/auth/permission");
  const admin = answer.permission === "admin";
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  session = new Session(api, admin);
  const badge = $("key-level");
  badge.textContent = key ? `${answer.permission} key` : "auth off";
  badge.classList.toggle("admin", admin);
  $("sign-out").hidden = !key;
  for (const node of document.querySelectorAll(".api-only")) node.hidden = admin;
  $("sign-in").hidden = true;
  $("tabs").hidden = false;
  $("session").hidden = false;
  openPage(location.hash.slice(1));
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  if (session) session.close();
  session = null;
  for (const page of Object.keys(PAGES)) $(`page-${page}`).hidden = true;
  $("tabs").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("key-input");
  const key = input.value.trim();
  const error = $("sign-in-error");
  say(error, "");
  try {
    await signIn(key);
    input.value = "";
  } catch (failure) {
    const text =
      failure instanceof ApiError && failure.status === 401
        ? "This key is not valid on this server."
        : describeError(failure);
    say(error, text, true);
  }
});

$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", () => openPage(location.hash.slice(1)));

async function start() {
  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) {
    try {
      await signIn(stored);
      return;
    } catch {
      sessionStorage.removeItem(KEY_STORAGE);
    }
  }
  try {
    await signIn(""); // a server with auth turned off lets everyone in as admin
  } catch {
    $("key-input").focus();
  }
}

start();
