// roomlog browser SDK: `import { Room, openMedia } from "/web/sdk/index.js"`.
export { Backoff, backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export { CallState, InvalidTransition, States, transition, TRANSITIONS } from "./callstate.js";
export { checkDevices, listDevices, openMedia, openPreferred, openScreen } from "./devices.js";
export { decodePixels, lumaStats, readVideo } from "./pattern.js";
export { cameraSlots, LAYERS } from "./publisher.js";
export { BANDS, DOWN_AFTER_MS, LEVEL_NAMES, LinkMeter, measure, participantLevel, qualityLevel, QualityMonitor,
         qualityReport, REPORT_INTERVAL_MS } from "./quality.js";
export { P2PLink } from "./p2p.js";
export { Phone } from "./phone.js";
export { Room } from "./room.js";
export { Stations } from "./stations.js";
export { RoomError } from "./signaling.js";
