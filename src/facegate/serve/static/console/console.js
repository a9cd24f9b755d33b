// The proctor console: enroll (camera shots or uploaded photos), search, delete, the audit log and today's
// counters, all through the admin API with an admin key.
import { ApiError, call } from "./api.js";
import { grabJpeg, startCamera, stopCamera, toBase64 } from "./camera.js";
import { loadCovariates } from "./covariates.js";

// The admin key is kept in sessionStorage: it survives a reload of the console but is gone when the tab closes,
// so a proctor's key does not stay behind on a shared exam-room machine. It is never put in a URL.
const KEY_STORAGE = "facegate.adminKey";
const AUDIT_PAGE = 20;
const MAX_SHOTS = 8;

const $ = (id) => document.getElementById(id);
let students = [];
let shots = [];
let auditCursors = [null]; // the "before" cursor of every page shown so far; the last one is the current page
let auditNext = null;
let pendingDelete = null;

const adminKey = () => sessionStorage.getItem(KEY_STORAGE) || "";
const api = (method, path, body, timeoutMs = 30000) => call(method, path, { key: adminKey(), body, timeoutMs });

function announce(text) {
  const region = $("announce");
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 50);
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.kind !== "http") return `No answer from the server (${err.kind}). Try again.`;
    return `${err.message} [${err.code}]`;
  }
  return String(err);
}

async function handleAuthError(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    signOut(err.status === 403 ? "That key is not an admin key." : "The key was refused; sign in again.");
    return true;
  }
  return false;
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  stopCamera($("enroll-preview"));
  $("workspace").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("admin-key").value = "";
  $("admin-key").focus();
}

async function signIn(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    await api("GET", "/admin/v1/model");
  } catch (err) {
    sessionStorage.removeItem(KEY_STORAGE);
    const status = err instanceof ApiError ? err.status : 0;
    $("login-error").textContent =
      status === 401 ? "That key was refused." : status === 403 ? "That key is not an admin key." : describe(err);
    return;
  }
  $("login").hidden = true;
  $("workspace").hidden = false;
  $("sign-out").hidden = false;
  $("enroll-id").focus();
  await Promise.all([loadService(), loadStudents(), loadAudit(null)]);
}

async function loadService() {
  try {
    const [model, counters] = await Promise.all([api("GET", "/admin/v1/model"), api("GET", "/admin/v1/counters")]);
    $("model-version").textContent = [model.name, model.version].filter(Boolean).join(" · ") || "?";
    $("model-threshold").textContent = Number(model.threshold).toFixed(3);
    $("counters-since").textContent = counters.since.slice(0, 10);
    const body = $("counters").querySelector("tbody");
    body.replaceChildren();
    const reasons = Object.entries(counters.by_reason);
    if (!reasons.length) reasons.push(["(no check-ins yet)", 0]);
    for (const [reason, n] of reasons) {
      const tr = document.createElement("tr");
      cell(tr, reason);
      cell(tr, n);
      body.appendChild(tr);
    }
    const tr = document.createElement("tr");
    tr.className = "total";
    cell(tr, "total");
    cell(tr, counters.total);
    body.appendChild(tr);
    await loadCovariates(api, $("covariate-table").querySelector("tbody"));
  } catch (err) {
    if (!(await handleAuthError(err))) announce(`Could not load the service state: ${describe(err)}`);
  }
}

async function loadStudents() {
  try {
    students = (await api("GET", "/admin/v1/students")).students;
  } catch (err) {
    if (!(await handleAuthError(err))) announce(`Could not load the students: ${describe(err)}`);
    return;
  }
  renderStudents();
}

function renderStudents() {
  const query = $("search").value.trim().toLowerCase();
  const body = $("student-table").querySelector("tbody");
  body.replaceChildren();
  const shown = students.filter((s) => s.student_id.toLowerCase().includes(query));
  for (const s of shown.slice(0, 500)) {
    const tr = document.createElement("tr");
    tr.dataset.student = s.student_id;
    cell(tr, s.student_id);
    cell(tr, s.photos);
    cell(tr, s.model_versions.join(", ")).className = "version";
    cell(tr, s.updated_at.slice(0, 16).replace("T", " "));
    const td = cell(tr, "");
    const del = document.createElement("button");
    del.type = "button";
    del.className = "danger";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${s.student_id}`);
    del.addEventListener("click", () => askDelete(s.student_id));
    td.appendChild(del);
    body.appendChild(tr);
  }
  $("students-empty").hidden = shown.length > 0;
}

function askDelete(studentId) {
  pendingDelete = studentId;
  $("confirm-text").textContent =
    `Delete ${studentId}? Their photos and templates are removed and they can no longer check in.`;
  $("confirm").showModal();
  $("confirm-cancel").focus();
}

async function confirmDelete() {
  const studentId = pendingDelete;
  $("confirm").close();
  pendingDelete = null;
  if (!studentId) return;
  try {
    await api("DELETE", `/admin/v1/students/${encodeURIComponent(studentId)}`);
    announce(`Deleted ${studentId}.`);
  } catch (err) {
    if (!(await handleAuthError(err))) announce(`Could not delete ${studentId}: ${describe(err)}`);
  }
  await Promise.all([loadStudents(), loadAudit(null)]);
  $("search").focus();
}

async function loadAudit(before, direction = "first") {
  const query = new URLSearchParams({ limit: String(AUDIT_PAGE) });
  if (before !== null) query.set("before", String(before));
  let page;
  try {
    page = await api("GET", `/admin/v1/audit/page?${query}`);
  } catch (err) {
    if (!(await handleAuthError(err))) announce(`Could not load the audit log: ${describe(err)}`);
    return;
  }
  if (direction === "first") auditCursors = [null];
  else if (direction === "older") auditCursors.push(before);
  else auditCursors.pop();
  auditNext = page.next;
  const body = $("audit-table").querySelector("tbody");
  body.replaceChildren();
  for (const e of page.entries) {
    const tr = document.createElement("tr");
    cell(tr, e.at.slice(0, 19).replace("T", " "));
    cell(tr, e.action);
    cell(tr, e.kiosk);
    cell(tr, e.student_id);
    cell(tr, e.decision);
    cell(tr, e.reason);
    cell(tr, e.model_version).className = "version";
    body.appendChild(tr);
  }
  $("audit-older").disabled = auditNext === null;
  $("audit-newer").disabled = auditCursors.length <= 1;
}

async function cameraStart() {
  const video = $("enroll-preview");
  video.hidden = false;
  try {
    await startCamera(video);
  } catch (err) {
    video.hidden = true;
    announce(`The camera is not available: ${err.message || err}`);
    return;
  }
  $("shot").disabled = false;
  $("shot").focus();
}

async function takeShot() {
  if (shots.length >= MAX_SHOTS) return;
  const thumb = document.createElement("canvas");
  thumb.width = 96;
  thumb.height = 72;
  thumb.setAttribute("role", "img");
  thumb.setAttribute("aria-label", `Shot ${shots.length + 1}`);
  shots.push(await grabJpeg($("enroll-preview"), thumb));
  $("shots").appendChild(thumb);
  updateShots();
}

function clearShots() {
  shots = [];
  $("shots").replaceChildren();
  updateShots();
}

function updateShots() {
  const n = shots.length;
  $("shot-count").textContent = n ? `${n} shot${n === 1 ? "" : "s"} taken.` : "No shots yet.";
  $("shots-clear").disabled = n === 0;
  $("shot").disabled = n >= MAX_SHOTS || !$("enroll-preview").srcObject;
}

async function enroll(ev) {
  ev.preventDefault();
  const studentId = $("enroll-id").value.trim();
  const out = $("enroll-result");
  const photos = [...shots];
  for (const file of $("enroll-files").files) photos.push(toBase64(new Uint8Array(await file.arrayBuffer())));
  if (!studentId || !photos.length) {
    out.className = "error-text";
    out.textContent = "Enter the student ID and take or upload at least one photo.";
    return;
  }
  $("enroll-submit").disabled = true;
  out.className = "";
  out.textContent = "Enrolling…";
  try {
    const res = await api("PUT", `/admin/v1/students/${encodeURIComponent(studentId)}`, { photos }, 120000);
    out.replaceChildren();
    const p = document.createElement("p");
    p.className = "ok-text";
    p.textContent = `Enrolled ${res.student_id}: ${res.accepted} photo${res.accepted === 1 ? "" : "s"} accepted.`;
    out.appendChild(p);
    if (res.rejected.length) out.appendChild(rejectedList(res.rejected));
    clearShots();
    $("enroll-files").value = "";
    stopCamera($("enroll-preview"));
    $("enroll-preview").hidden = true;
    updateShots();
  } catch (err) {
    if (await handleAuthError(err)) return;
    out.className = "error-text";
    out.textContent = `Not enrolled: ${describe(err)}`;
  } finally {
    $("enroll-submit").disabled = false;
  }
  await Promise.all([loadStudents(), loadAudit(null)]);
}

function rejectedList(rejected) {
  const ul = document.createElement("ul");
  ul.className = "error-text";
  for (const r of rejected) {
    const li = document.createElement("li");
    li.textContent = `Photo ${r.photo} refused: ${r.reason} (${r.message})`;
    ul.appendChild(li);
  }
  return ul;
}

function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("admin-key").value.trim();
    $("admin-key").value = "";
    if (key) signIn(key);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", () => Promise.all([loadService(), loadStudents(), loadAudit(null)]));
  $("camera-start").addEventListener("click", cameraStart);
  $("shot").addEventListener("click", takeShot);
  $("shots-clear").addEventListener("click", clearShots);
  $("enroll-form").addEventListener("submit", enroll);
  $("search").addEventListener("input", renderStudents);
  $("confirm-delete").addEventListener("click", confirmDelete);
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  $("confirm").addEventListener("close", () => (pendingDelete = null));
  $("audit-older").addEventListener("click", () => loadAudit(auditNext, "older"));
  $("audit-newer").addEventListener("click", () => loadAudit(auditCursors[auditCursors.length - 2] ?? null, "newer"));
  if (adminKey()) signIn(adminKey());
  else signOut();
}

init();
