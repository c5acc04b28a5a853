// iShowTTS: plays the bot's speech in the OBS overlay (`/overlay?audio=1`).
//
// PcmQueue takes the audio socket's messages (format: bot/audio/browser.py):
// JSON control objects, and audio frames as ArrayBuffers. It renders them in
// real time and applies what the bot's own output applies in its callback:
// pause and volume (ramped), a skip's fade-out. Each utterance starts once a
// small jitter buffer is filled (or its end has arrived), and so does one that
// ran dry. Loaded as an AudioWorklet module (PcmPlayer); where a page may not
// use worklets (plain http from another machine) the page loads this same file
// as a script and runs PcmQueue from a ScriptProcessorNode.
"use strict";

const JITTER_S = 0.08;
const VOLUME_RAMP_S = 0.05;
// A page that joined part-way through a line, or a connection that was replaced, fades.
const JOIN_FADE_S = 0.01;
// The most audio held (the bot queues up to 20 s ahead); beyond it the oldest goes.
const MAX_HELD_S = 60;
// Not an utterance: the faded tail of one that was cut or replaced.
const TAIL = -1;

class PcmQueue {
  constructor(rate, report) {
    this.rate = rate;
    this.report = report;
    this.chunks = [];
    this.held = new Map(); // utterance → samples held
    this.ended = new Set([TAIL]);
    this.dead = new Set();
    this.joining = new Map(); // utterance → samples of fade-in left
    this.playing = null;
    this.waiting = true;
    this.pauseGain = 1;
    this.pauseTarget = 1;
    this.volume = 1;
    this.volumeTarget = 1;
    this.fadeOutMs = 15;
  }

  receive(message) {
    if (message instanceof ArrayBuffer) {
      this.frame(message);
      return;
    }
    switch (message.type) {
      case "hello":
        this.replace();
        this.pauseTarget = this.pauseGain = message.paused ? 0 : 1;
        this.volumeTarget = this.volume = Number(message.volume);
        this.fadeOutMs = Number(message.fade_out_ms);
        break;
      case "begin":
        this.dead.delete(message.utt);
        this.ended.delete(message.utt);
        if (message.joined) this.joining.set(message.utt, Math.round(JOIN_FADE_S * this.rate));
        break;
      case "end":
        this.ended.add(message.utt);
        break;
      case "cut":
        this.cut(message.utt, Number(message.fade_ms));
        break;
      case "pause":
        this.pauseTarget = message.paused ? 0 : 1;
        break;
      case "volume":
        this.volumeTarget = Math.min(1, Math.max(0, Number(message.volume)));
        break;
    }
  }

  frame(buffer) {
    if (buffer.byteLength < 8) return;
    const view = new DataView(buffer);
    const utt = view.getUint32(0, true);
    if (this.dead.has(utt)) return;
    const pcm = new Int16Array(buffer, 8, (buffer.byteLength - 8) >> 1);
    const data = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    let fade = this.joining.get(utt);
    if (fade) {
      const total = Math.round(JOIN_FADE_S * this.rate);
      for (let i = 0; i < data.length && fade > 0; i++, fade--) data[i] *= 1 - fade / total;
      this.joining.set(utt, fade);
    }
    this.push({ utt, data, pos: 0 });
    let total = 0;
    for (const n of this.held.values()) total += n;
    while (total > MAX_HELD_S * this.rate && this.chunks.length > 1) {
      const old = this.chunks.shift();
      this.hold(old.utt, -(old.data.length - old.pos));
      total -= old.data.length - old.pos;
    }
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.hold(chunk.utt, chunk.data.length - chunk.pos);
  }

  hold(utt, samples) {
    const n = (this.held.get(utt) || 0) + samples;
    if (n > 0) this.held.set(utt, n);
    else this.held.delete(utt);
  }

  // What is still held of `utt`, faded out over `samples`, ahead of everything else.
  tail(utt, samples) {
    const out = new Float32Array(samples);
    let n = 0;
    for (const c of this.chunks) {
      if (c.utt !== utt) continue;
      const take = Math.min(samples - n, c.data.length - c.pos);
      out.set(c.data.subarray(c.pos, c.pos + take), n);
      n += take;
      if (n >= samples) break;
    }
    for (let i = 0; i < n; i++) out[i] *= 1 - (i + 1) / samples;
    return out.subarray(0, n);
  }

  cut(utt, fadeMs) {
    const faded =
      this.playing === utt && !this.waiting
        ? this.tail(utt, Math.max(1, Math.round((fadeMs / 1000) * this.rate)))
        : new Float32Array(0);
    this.chunks = this.chunks.filter((c) => c.utt !== utt);
    this.held.delete(utt);
    this.dead.add(utt);
    this.ended.add(utt);
    if (faded.length) {
      this.chunks.unshift({ utt: TAIL, data: faded, pos: 0 });
      this.hold(TAIL, faded.length);
      this.playing = TAIL;
    }
  }

  // A new connection: what the old one left is faded out, the rest dropped.
  replace() {
    const playing = this.playing;
    const faded =
      playing !== null && !this.waiting
        ? this.tail(playing, Math.round(JOIN_FADE_S * this.rate))
        : new Float32Array(0);
    this.chunks = [];
    this.held = new Map();
    this.ended = new Set([TAIL]);
    this.dead = new Set();
    this.joining = new Map();
    this.playing = null;
    this.waiting = true;
    if (faded.length) {
      this.push({ utt: TAIL, data: faded, pos: 0 });
      this.playing = TAIL;
      this.waiting = false;
    }
  }

  ready(utt) {
    return this.ended.has(utt) || (this.held.get(utt) || 0) >= JITTER_S * this.rate;
  }

  // Fill `out` (silence where there is nothing to play).
  render(out) {
    out.fill(0);
    if (this.pauseTarget === 0 && this.pauseGain === 0) return;
    let i = 0;
    while (i < out.length) {
      const c = this.chunks[0];
      if (!c) {
        if (this.playing !== null && !this.waiting && !this.ended.has(this.playing)) {
          this.report({ type: "gap", utt: this.playing });
          this.waiting = true;
        }
        break;
      }
      if (c.utt !== this.playing || this.waiting) {
        if (!this.ready(c.utt)) break;
        if (c.utt !== this.playing && c.utt !== TAIL) this.report({ type: "start", utt: c.utt });
        this.playing = c.utt;
        this.waiting = false;
      }
      const n = Math.min(out.length - i, c.data.length - c.pos);
      out.set(c.data.subarray(c.pos, c.pos + n), i);
      c.pos += n;
      i += n;
      this.hold(c.utt, -n);
      if (c.pos >= c.data.length) {
        this.chunks.shift();
        if (!this.held.has(c.utt) && this.ended.has(c.utt) && c.utt !== TAIL) {
          this.report({ type: "done", utt: c.utt });
        }
      }
    }
    const pauseStep = 1 / Math.max(1, (this.fadeOutMs / 1000) * this.rate);
    const volumeStep = 1 / Math.max(1, VOLUME_RAMP_S * this.rate);
    for (let k = 0; k < out.length; k++) {
      this.pauseGain = toward(this.pauseGain, this.pauseTarget, pauseStep);
      this.volume = toward(this.volume, this.volumeTarget, volumeStep);
      out[k] *= this.pauseGain * this.volume;
    }
  }
}

function toward(value, target, step) {
  if (value < target) return Math.min(target, value + step);
  if (value > target) return Math.max(target, value - step);
  return value;
}

if (typeof AudioWorkletProcessor === "function") {
  class PcmPlayer extends AudioWorkletProcessor {
    constructor() {
      super();
      this.queue = new PcmQueue(sampleRate, (m) => this.port.postMessage(m));
      this.port.onmessage = (e) => this.queue.receive(e.data);
    }

    process(_inputs, outputs) {
      const out = outputs[0] && outputs[0][0];
      if (out) this.queue.render(out);
      return true;
    }
  }
  registerProcessor("pcm-player", PcmPlayer);
} else {
  globalThis.PcmQueue = PcmQueue;
}
