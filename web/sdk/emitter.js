// A minimal event emitter: on(type, fn) returns an unsubscribe function; "*" listeners
// get (type, payload) for every event.

export class Emitter {
  #listeners = new Map();

  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.#listeners.get(type)?.delete(fn);
  }

  once(type) {
    return new Promise((resolve) => { const off = this.on(type, (p) => { off(); resolve(p); }); });
  }

  emit(type, payload) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) this.#call(fn, payload);
    for (const fn of [...(this.#listeners.get("*") ?? [])]) this.#call(fn, type, payload);
  }

  #call(fn, ...args) {
    try { fn(...args); } catch (err) { console.error("roomlog listener failed", err); }
  }
}
