// Validates Mermaid diagrams with Mermaid's own parser, as a long-lived process.
//
// Protocol (one JSON object per line):
//   stdout, once at start:  {"ready": true, "mermaid": "<version>"}
//   stdin:                  {"id": <any>, "text": "<mermaid source>"}
//   stdout, per request:    {"id": <same>, "ok": true, "type": "<diagram type>"}
//                        or {"id": <same>, "ok": false, "error": "<parser message>"}
// Requests are answered one at a time, in order.
//
// Mermaid >= 10 sanitises labels with DOMPurify, which needs a DOM: without one some
// diagram types (class diagrams, labels with markup) fail with "DOMPurify.addHook is
// not a function". A jsdom window installed before Mermaid is first imported gives
// DOMPurify what it needs. Nothing here renders; only the parser runs.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { JSDOM } from "jsdom";

const MAX_ERROR_CHARS = 600;

// Mermaid logs through console.*; stdout carries only protocol lines.
for (const level of ["log", "info", "warn", "debug", "trace"]) {
  console[level] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

const { window } = new JSDOM("<!DOCTYPE html><html><body></body></html>");
globalThis.window = window;
globalThis.document = window.document;

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function describe(error) {
  const text = String((error && error.message) || error || "unknown error");
  return text.length > MAX_ERROR_CHARS ? text.slice(0, MAX_ERROR_CHARS) + "..." : text;
}

async function check(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    return { id: null, ok: false, error: "request is not JSON" };
  }
  const id = request && "id" in request ? request.id : null;
  if (!request || typeof request.text !== "string") {
    return { id, ok: false, error: "request needs a string 'text'" };
  }
  try {
    const parsed = await mermaid.parse(request.text);
    return { id, ok: true, type: parsed.diagramType };
  } catch (error) {
    return { id, ok: false, error: describe(error) };
  }
}

const installed = new URL("./node_modules/mermaid/package.json", import.meta.url);
reply({ ready: true, mermaid: JSON.parse(readFileSync(installed, "utf8")).version });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim()) {
    reply(await check(line));
  }
}
