// The camera: start a preview, take one JPEG frame, stop. A frame lives only in memory until it is sent; nothing
// is written to storage, and the canvas is cleared right after each shot.

/**
 * Start the camera into a video element.
 * @param {HTMLVideoElement} video The preview element.
 * @returns {Promise<MediaStream>} The stream (stop it with stopCamera).
 */
export async function startCamera(video) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser offers no camera here (the page must be served over https or from localhost)");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } },
  });
  video.srcObject = stream;
  await video.play();
  if (!video.videoWidth) {
    await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
  }
  return stream;
}

/** Stop the camera (the light goes off) and detach it from the preview. */
export function stopCamera(video) {
  const stream = video.srcObject;
  if (stream) for (const track of stream.getTracks()) track.stop();
  video.srcObject = null;
}

/**
 * One frame of the preview as a base64 JPEG.
 * @param {HTMLVideoElement} video A playing preview.
 * @param {HTMLCanvasElement} [thumb] If given, a small copy is drawn into it (the console shows the shots taken).
 * @returns {Promise<string>} The JPEG, base64 (no data: prefix).
 */
export async function grabJpeg(video, thumb) {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  if (thumb) thumb.getContext("2d").drawImage(canvas, 0, 0, thumb.width, thumb.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  canvas.width = 0; // drop the pixels now rather than whenever the collector runs
  return toBase64(new Uint8Array(await blob.arrayBuffer()));
}

/** Base64 of bytes (in chunks: String.fromCharCode cannot take a whole photo at once). */
export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
