// Small DOM helpers. Text from the server only ever goes in through textContent.

export const $ = (id) => document.getElementById(id);

/** A new element: el("button", {class: "small", text: "Load", "aria-label": "..."}, ...children) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

/** Show a short outcome next to a control; errors are styled as such. */
export function say(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

export function describeError(error) {
  return error && error.message ? error.message : String(error);
}

/**
 * Make a role="tablist" keyboard-usable (arrow keys, Home, End) and call `select(tab)` when a
 * tab is chosen. Returns a function that marks a tab as selected without calling `select`.
 */
export function tablist(list, select, signal) {
  const tabs = () => [...list.querySelectorAll('[role="tab"]')];
  const mark = (chosen) => {
    for (const tab of tabs()) {
      const on = tab === chosen;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
    }
  };
  list.addEventListener(
    "click",
    (event) => {
      const tab = event.target.closest('[role="tab"]');
      if (tab) select(tab);
    },
    { signal },
  );
  list.addEventListener(
    "keydown",
    (event) => {
      const all = tabs();
      const index = all.indexOf(document.activeElement);
      if (index < 0) return;
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: all.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const next = all[(moves[event.key] + all.length) % all.length];
      next.focus();
      select(next);
    },
    { signal },
  );
  return mark;
}

/** Format a number for people: 1234.5 -> "1,234.5" (at most `digits` decimals). */
export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return value.toLocaleString("en", { maximumFractionDigits: digits });
}
