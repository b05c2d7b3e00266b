// Photos are downscaled on the device before they are stored (sealed) and uploaded: a phone's
// 12-megapixel picture would cost minutes per house on a 64 kbit/s link.

/** Below this much free space no new photo is taken: drafts and the outbox must always fit. */
export const MIN_FREE_BYTES = 50 * 1024 * 1024;

/** Whether a photo of `size` bytes may be taken with `space` ({usage, quota, free} or null when
 * the browser cannot say): the larger of MIN_FREE_BYTES and four times the photo must stay free. */
export function roomForPhoto(space, size) {
  if (!space) return true;
  return space.free >= Math.max(MIN_FREE_BYTES, size * 4);
}

/** Scale `file` (an image Blob) to at most `maxPixels` (width × height), as JPEG bytes. */
export async function downscalePhoto(file, maxPixels, quality = 0.85) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const pixels = bitmap.width * bitmap.height;
  const scale = pixels > maxPixels ? Math.sqrt(maxPixels / pixels) : 1;
  const width = Math.max(1, Math.floor(bitmap.width * scale));
  const height = Math.max(1, Math.floor(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const blob = await canvas.convertToBlob({ type: "image/jpeg", quality });
  return { bytes: new Uint8Array(await blob.arrayBuffer()), type: "image/jpeg", width, height };
}

/** The content address of `bytes`: SHA-256 as 64 lower-case hex digits. */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
