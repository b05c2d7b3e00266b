// Read the enrolment QR code from the camera: the browser's BarcodeDetector where it has one,
// else the vendored jsQR (../vendor/jsqr/jsQR.js, loaded only now; see vendor/VENDOR.md).

function loadJsQr() {
  if (self.jsQR) return Promise.resolve(self.jsQR);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/field/static/vendor/jsqr/jsQR.js";
    script.onload = () => resolve(self.jsQR);
    script.onerror = () => reject(new Error("二维码识别库加载失败"));
    document.head.append(script);
  });
}

async function detector() {
  if ("BarcodeDetector" in self) {
    const formats = await self.BarcodeDetector.getSupportedFormats();
    if (formats.includes("qr_code")) {
      const found = new self.BarcodeDetector({ formats: ["qr_code"] });
      return async (source) => (await found.detect(source))[0]?.rawValue ?? null;
    }
  }
  const jsQR = await loadJsQr();
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  return async (video) => {
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    if (!canvas.width || !canvas.height) return null;
    context.drawImage(video, 0, 0);
    const image = context.getImageData(0, 0, canvas.width, canvas.height);
    return jsQR(image.data, image.width, image.height)?.data ?? null;
  };
}

/** The enrolment a QR code carries: the admin page's `villagesync:enroll?server=<url>&code=<code>`
 * (server.web.devices.enrolment_payload), or a bare code typed into another scanner app. */
export function enrolmentFromQr(text) {
  const match = /^villagesync:enroll\?(.*)$/.exec(text.trim());
  if (!match) return { code: text.trim(), server: null };
  const params = new URLSearchParams(match[1]);
  return { code: params.get("code") || "", server: params.get("server") };
}

/** Decode the text of a QR code in an image (Blob/ImageBitmap source), or null. */
export async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const jsQR = await loadJsQr();
  const image = context.getImageData(0, 0, bitmap.width, bitmap.height);
  return jsQR(image.data, image.width, image.height)?.data ?? null;
}

/** Start the back camera in `video`; `result` resolves to the first QR text seen. */
export function scanQr(video) {
  let stream = null;
  let stopped = false;
  let stopRequested;
  const stoppedByUser = new Promise((_, reject) => (stopRequested = reject));
  const release = () => {
    stopped = true;
    if (stream) for (const track of stream.getTracks()) track.stop();
  };
  // The person closed the camera. (A code found releases the camera without this: rejecting
  // here first would make the race below end with "closed" although the code was read.)
  const stop = () => {
    release();
    stopRequested(new Error("已关闭相机"));
  };
  const result = (async () => {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream;
    await video.play();
    const read = await detector();
    while (!stopped) {
      const text = await read(video);
      if (text) {
        release();
        return text;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error("已关闭相机");
  })();
  return { result: Promise.race([result, stoppedByUser]), stop };
}
