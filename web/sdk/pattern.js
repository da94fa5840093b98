// The frame pattern shared with client/synthetic.py: a source code (8 bits) and a frame
// counter (24 bits) drawn as BLOCK-pixel black/white squares along the top of a
// REF_WIDTH x REF_HEIGHT frame. Readers draw the video at that reference size first, so
// a frame the encoder scaled down still decodes.

export const BITS = 32;
export const BLOCK = 10;
export const REF_WIDTH = 640;
export const REF_HEIGHT = 360;

function luma(data, width, x, y) {
  const i = (y * width + x) * 4;
  return 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
}

/** {code, counter} from RGBA pixels of a frame drawn at `width` x (>= BLOCK rows). */
export function decodePixels(data, width) {
  const perRow = Math.floor(width / BLOCK);
  let value = 0;
  for (let bit = 0; bit < BITS; bit++) {
    const row = Math.floor(bit / perRow), col = bit % perRow;
    const cy = row * BLOCK + BLOCK / 2, cx = col * BLOCK + BLOCK / 2;
    let sum = 0;
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) sum += luma(data, width, cx + dx, cy + dy);
    value = value * 2 + (sum / 25 > 128 ? 1 : 0);
  }
  return { code: Math.floor(value / 2 ** 24), counter: value % 2 ** 24 };
}

/** Mean and standard deviation of the luma of RGBA pixels (is the picture real?). */
export function lumaStats(data) {
  let sum = 0, sq = 0;
  const n = data.length / 4;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += y; sq += y * y;
  }
  const mean = sum / n;
  return { mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
}

/** Read the pattern and pixel statistics of what a <video> shows now (null before its first frame). */
export function readVideo(video, width = REF_WIDTH, height = REF_HEIGHT) {
  if (!video.videoWidth || video.readyState < 2) return null;
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, width, height);
  const { data } = ctx.getImageData(0, 0, width, height);
  return { ...decodePixels(data, width), ...lumaStats(data), videoWidth: video.videoWidth,
           videoHeight: video.videoHeight };
}
