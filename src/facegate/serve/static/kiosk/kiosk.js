// The check-in kiosk: ID (typed, or by a keyboard-wedge scanner that types it and Enter) -> camera -> verifier ->
// full-screen result, then back to the ID screen by itself.
import { ApiError, verify } from "./api.js";
import { grabJpeg, startCamera, stopCamera } from "./camera.js";

// The kiosk key lives in this device's localStorage: a kiosk is an unattended, dedicated browser that must survive
// restarts without a proctor re-entering the key, and the key is never put in a URL (it would end up in history,
// logs and Referer headers). It is only ever sent in the Authorization header to this origin.
const KEY_STORAGE = "facegate.kioskKey";
const RESULT_SECONDS = 6;
const REQUEST_TIMEOUT_MS = 15000;

// What a student is told for each retry reason; no score or threshold is ever shown.
const RETRY_GUIDANCE = {
  no_face: "We could not see your face. Look straight at the camera.",
  multiple_faces: "One person at a time, please. Make sure nobody else is in view.",
  low_quality: "Hold still and make sure your face is well lit.",
};

const $ = (id) => document.getElementById(id);
const screens = ["setup", "id-screen", "camera-screen", "busy-screen", "result-screen"];
let resultTimer = null;
let studentId = "";

function show(id) {
  for (const s of screens) $(s).hidden = s !== id;
  document.body.dataset.screen = id;
}

function announce(text) {
  // Re-set the live region's text so screen readers announce it even when it repeats.
  const region = $("announce");
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 50);
}

function kioskKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function showSetup() {
  clearTimeout(resultTimer);
  $("setup-key").value = "";
  $("setup-error").textContent = "";
  $("setup-cancel").hidden = !kioskKey();
  show("setup");
  $("setup-key").focus();
}

function showIdScreen() {
  clearTimeout(resultTimer);
  stopCamera($("preview"));
  studentId = "";
  $("student-id").value = "";
  if (!kioskKey()) {
    showSetup();
    return;
  }
  show("id-screen");
  $("student-id").focus();
}

async function showCamera() {
  show("camera-screen");
  $("capture").disabled = true;
  try {
    await startCamera($("preview"));
  } catch (err) {
    showResult("error", "The camera is not available", "Please see the proctor.");
    return;
  }
  $("capture").disabled = false;
  $("capture").focus();
}

function showResult(kind, title, detail) {
  stopCamera($("preview"));
  const screen = $("result-screen");
  screen.className = `screen result ${kind}`;
  screen.dataset.result = kind;
  $("result-icon").textContent = { accept: "✓", reject: "✕", retry: "↻", error: "!" }[kind];
  $("result-title").textContent = title;
  $("result-detail").textContent = detail;
  show("result-screen");
  announce(`${title}. ${detail}`);
  $("result-done").focus();
  clearTimeout(resultTimer);
  resultTimer = setTimeout(showIdScreen, RESULT_SECONDS * 1000);
}

async function capture() {
  const video = $("preview");
  if (!video.srcObject) return;
  $("capture").disabled = true;
  let image = await grabJpeg(video);
  stopCamera(video);
  show("busy-screen");
  announce("Checking");
  let out;
  try {
    out = await verify(kioskKey(), studentId, image, REQUEST_TIMEOUT_MS);
  } catch (err) {
    showFailure(err);
    return;
  } finally {
    image = null; // the photo is not kept once it is sent
  }
  const reason = String(out.reason || "");
  if (out.decision === "accept") {
    showResult("accept", "Welcome — you are checked in", `Student ${studentId}`);
  } else if (out.decision === "retry") {
    showResult("retry", "Let's try again", RETRY_GUIDANCE[reason] || "Look at the camera and try again.");
  } else {
    // Mismatch, presentation attack or anything else: a person decides, and the student is told nothing more.
    showResult("reject", "Please see the proctor", "We could not confirm your identity here.");
  }
}

function showFailure(err) {
  if (!(err instanceof ApiError)) {
    showResult("error", "Something went wrong", "Please try again or see the proctor.");
  } else if (err.kind === "timeout") {
    showResult("error", "The check took too long", "The verifier did not answer in time. Please try again.");
  } else if (err.kind === "network") {
    // Not a reject: the verifier was never asked, so nothing is said about the student.
    showResult("error", "No connection to the verifier", "Please try again, or see the proctor if this repeats.");
  } else if (err.status === 401) {
    showResult("error", "This kiosk is not set up", "Please see the proctor (the kiosk key was refused).");
  } else if (err.code === "unknown_student") {
    showResult("reject", "Please see the proctor", "This student ID is not enrolled for check-in.");
  } else if (err.status === 429 || err.status === 503) {
    showResult("error", "The verifier is busy", "Please try again in a moment.");
  } else {
    showResult("error", "The check could not be completed", "Please try again or see the proctor.");
  }
}

function init() {
  $("setup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("setup-key").value.trim();
    if (!key) {
      $("setup-error").textContent = "Enter the kiosk key.";
      return;
    }
    localStorage.setItem(KEY_STORAGE, key);
    $("setup-key").value = "";
    showIdScreen();
  });
  $("setup-cancel").addEventListener("click", showIdScreen);
  $("open-setup").addEventListener("click", showSetup);
  $("id-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("student-id").value.trim();
    if (!value) return;
    studentId = value;
    showCamera();
  });
  $("capture").addEventListener("click", capture);
  $("camera-cancel").addEventListener("click", showIdScreen);
  $("result-done").addEventListener("click", showIdScreen);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && document.body.dataset.screen !== "busy-screen") showIdScreen();
  });
  showIdScreen();
}

init();
