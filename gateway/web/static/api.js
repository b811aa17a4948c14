// The JSON API on this origin: one fetch wrapper, and errors as people read them.
//
// Every Cinema error is google.rpc.Status in proto3 JSON: {code, message, details}. A
// BadRequest detail names the fields that were wrong; ApiError keeps them apart so a form
// can show each one next to its field.

import { session, signOut } from "./session.js";

const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";
const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

/** An error answer of the API (or no answer at all: status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    const details = body && Array.isArray(body.details) ? body.details : [];
    super(describe(status, body));
    this.name = "ApiError";
    this.status = status;
    this.code = body && typeof body.code === "number" ? body.code : null;
    this.reason = "";
    this.violations = [];
    for (const detail of details) {
      if (detail["@type"] === ERROR_INFO) {
        this.reason = String(detail.reason || "");
      } else if (detail["@type"] === BAD_REQUEST) {
        for (const violation of detail.fieldViolations || []) {
          this.violations.push({
            field: String(violation.field || ""),
            description: String(violation.description || ""),
          });
        }
      }
    }
  }
}

function describe(status, body) {
  if (status === 0) {
    return "Cinema did not answer. Check your connection and try again.";
  }
  if (body && typeof body.message === "string" && body.message) {
    // The server's message starts lower-case and has no full stop: make it a sentence.
    const text = body.message;
    return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
  }
  const fallbacks = {
    401: "Please log in to do this.",
    403: "You are not allowed to do this.",
    404: "Not found.",
    429: "Too many requests: wait a moment and try again.",
  };
  if (fallbacks[status]) {
    return fallbacks[status];
  }
  if (status >= 500) {
    return "Cinema is having trouble right now. Please try again in a moment.";
  }
  return `The request failed (HTTP ${status}).`;
}

/**
 * Call the JSON API: api("GET", "/api/v1/movies", {query: {pageSize: 10}}).
 * Sends the signed-in user's token unless auth is false. Resolves to the parsed body;
 * rejects with ApiError.
 */
export async function api(method, path, { query = null, body = null, auth = true } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") {
        url.searchParams.append(key, String(item));
      }
    }
  }
  const headers = { accept: "application/json" };
  if (body !== null) {
    headers["content-type"] = "application/json";
  }
  const current = session();
  if (auth && current) {
    headers.authorization = `Bearer ${current.token}`;
  }
  let reply;
  try {
    reply = await fetch(url, {
      method,
      headers,
      body: body === null ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, null);
  }
  const text = await reply.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!reply.ok) {
    if (reply.status === 401 && current) {
      // The token expired or was refused: forget it, so the page offers to log in.
      signOut();
    }
    throw new ApiError(reply.status, parsed);
  }
  return parsed;
}

/** A fresh idempotency key (a UUID v4); crypto.randomUUID needs a secure context. */
export function requestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
