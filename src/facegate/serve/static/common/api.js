// Calls to the verifier service from the kiosk and the console: same origin only, the key in a header (never in a
// URL), a time limit on every request, and errors that say whether the network or the server answered.

/** Why a call failed: kind is "timeout", "network" (nothing came back) or "http" (the server answered an error). */
export class ApiError extends Error {
  constructor(kind, status, code, message) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

/**
 * One JSON request to this origin.
 * @param {string} method HTTP method.
 * @param {string} path Absolute path on this origin.
 * @param {{key?: string, body?: unknown, timeoutMs?: number}} options The key (sent as a Bearer token), a JSON body
 *     and the time limit.
 * @returns {Promise<any>} The decoded JSON answer.
 */
export async function call(method, path, { key, body, timeoutMs = 15000 } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (err) {
    const kind = controller.signal.aborted ? "timeout" : "network";
    throw new ApiError(kind, 0, kind, kind === "timeout" ? "the request timed out" : "the network is unreachable");
  } finally {
    clearTimeout(timer);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const code = (payload && payload.code) || `http_${response.status}`;
    const message = (payload && payload.error) || response.statusText;
    throw new ApiError("http", response.status, code, message);
  }
  return payload;
}

/**
 * Verify one check-in photo with the v2 inference protocol.
 * @param {string} key The kiosk key.
 * @param {string} studentId The student's id.
 * @param {string} imageB64 A JPEG, base64.
 * @param {number} timeoutMs Time limit.
 * @returns {Promise<Record<string, string|number>>} The outputs by name (decision, reason, message, ...).
 */
export async function verify(key, studentId, imageB64, timeoutMs = 15000) {
  const body = {
    inputs: [
      { name: "image", shape: [1], datatype: "BYTES", data: [imageB64] },
      { name: "student_id", shape: [1], datatype: "BYTES", data: [studentId] },
    ],
  };
  const answer = await call("POST", "/v2/models/verifier/infer", { key, body, timeoutMs });
  const out = {};
  for (const o of answer.outputs || []) out[o.name] = o.data[0];
  return out;
}
