// The call / connection state machine (the Agora and Kurento seeds):
//   Idle -> Calling (we dial) | Ringing (we are called) | Connecting (we join a room)
//   Calling/Ringing -> Connecting (accepted) | Ending (rejected, cancelled, timed out)
//   Connecting -> Connected | Failed;  Connected -> Reconnecting (socket lost) -> Connected | Failed
//   any active state -> Ending (hang up / leave) -> Idle;  Failed -> Idle (reset)
// Pure: `transition(state, event)` looks the pair up in one table.

export const States = Object.freeze({
  IDLE: "idle", CALLING: "calling", RINGING: "ringing", CONNECTING: "connecting",
  CONNECTED: "connected", RECONNECTING: "reconnecting", ENDING: "ending", FAILED: "failed",
});

const S = States;

export const TRANSITIONS = Object.freeze({
  [S.IDLE]: { dial: S.CALLING, incoming: S.RINGING, join: S.CONNECTING },
  [S.CALLING]: { accepted: S.CONNECTING, rejected: S.ENDING, timeout: S.ENDING, hangup: S.ENDING, fail: S.FAILED },
  [S.RINGING]: { accept: S.CONNECTING, reject: S.ENDING, cancelled: S.ENDING, timeout: S.ENDING, fail: S.FAILED },
  [S.CONNECTING]: { connected: S.CONNECTED, lost: S.RECONNECTING, hangup: S.ENDING, fail: S.FAILED },
  [S.CONNECTED]: { lost: S.RECONNECTING, hangup: S.ENDING, fail: S.FAILED },
  [S.RECONNECTING]: { connected: S.CONNECTED, lost: S.RECONNECTING, hangup: S.ENDING, fail: S.FAILED },
  [S.ENDING]: { ended: S.IDLE },
  [S.FAILED]: { reset: S.IDLE, hangup: S.ENDING },
});

export class InvalidTransition extends Error {
  constructor(state, event) {
    super(`no transition from ${state} on ${event}`);
    this.state = state;
    this.event = event;
  }
}

/** The state after `event` in `state`; throws InvalidTransition when the table has no entry. */
export function transition(state, event) {
  const next = TRANSITIONS[state]?.[event];
  if (next === undefined) throw new InvalidTransition(state, event);
  return next;
}

/** Holds the current state and reports changes to `onChange(state, previous, event)`. */
export class CallState {
  constructor(onChange = () => {}) {
    this.state = S.IDLE;
    this.onChange = onChange;
  }

  send(event) {
    const previous = this.state;
    this.state = transition(previous, event);
    if (this.state !== previous || event === "lost") this.onChange(this.state, previous, event);
    return this.state;
  }

  can(event) {
    return TRANSITIONS[this.state]?.[event] !== undefined;
  }
}
