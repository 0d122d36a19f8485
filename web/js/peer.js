// One WebRTC connection of a call: this device to one other participant's device (calls.js
// keeps one per participant: a mesh). It negotiates the "perfect negotiation" way (the
// polite side gives way when both offer at once), applies incoming signals one at a time,
// trickles its ICE candidates, and says whether media can flow: "connecting", then
// "connected" (or "reconnecting" while the path is interrupted), or "failed".

/** A connection that has not come up by then counts as failed. */
const CONNECT_TIMEOUT_MS = 30_000;

export class Peer {
  /**
   * @param {object} o
   * @param {string} o.sessionId  the other device (signals are addressed to it)
   * @param {string} o.userId     its user
   * @param {boolean} o.polite    gives way when both sides offer at once
   * @param {boolean} o.initiator this device joined later: it adds its tracks at once, which
   *   makes the first offer; otherwise it waits for the other side's offer and adds its
   *   tracks while answering
   * @param {MediaStream} o.local   this device's camera and microphone
   * @param {RTCConfiguration} o.config
   * @param {(signal: object) => void} o.send  sends a signal to the other device
   * @param {() => void} o.onChange  the state or the remote stream changed
   */
  constructor({ sessionId, userId, polite, initiator, local, config, send, onChange }) {
    this.sessionId = sessionId;
    this.userId = userId;
    this.pc = new RTCPeerConnection(config);
    /** The other device's media, once its first track arrived. */
    this.stream = null;
    /** Its microphone and camera as the server last said (`call_media`). */
    this.audio = true;
    this.video = true;
    this.state = "connecting";
    this.closed = false;

    this.polite = polite;
    this.local = local;
    this.send = send;
    this.onChange = onChange;
    this.mayOffer = initiator; // the waiting side only after the first offer came in
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.tracksAdded = false;
    this.pendingCandidates = []; // candidates that came before the remote description
    this.queue = Promise.resolve();
    this.localCandidates = 0;

    const pc = this.pc;
    pc.onnegotiationneeded = () => this.#negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && !candidate.candidate) return;
      if (candidate) this.localCandidates += 1;
      const signal = candidate
        ? {
            kind: "ice",
            candidate: candidate.candidate,
            sdp_mid: candidate.sdpMid ?? undefined,
            sdp_m_line_index: candidate.sdpMLineIndex ?? undefined,
          }
        : { kind: "ice", candidate: "" }; // end of candidates
      this.#send(signal);
    };
    pc.onicegatheringstatechange = () => {
      // Nothing gathered at all (say relay-only and the TURN server refused us): no pair
      // can ever form, and the browser would wait in "new" forever.
      if (pc.iceGatheringState === "complete" && this.localCandidates === 0) this.#setState("failed");
    };
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      if (state === "connected") this.#setState("connected");
      else if (state === "failed") this.#setState("failed");
      else if (state === "disconnected" && this.state === "connected") this.#setState("reconnecting");
    };
    pc.ontrack = ({ track, streams }) => {
      if (streams[0]) this.stream = streams[0];
      else (this.stream ||= new MediaStream()).addTrack(track);
      this.onChange();
    };
    this.timer = setTimeout(() => {
      if (this.state === "connecting") this.#setState("failed");
    }, CONNECT_TIMEOUT_MS);
    if (initiator) this.#addTracks();
  }

  /** Applies a signal from the other device, after those that came before it. */
  receive(signal) {
    this.queue = this.queue
      .then(() => this.#handle(signal))
      .catch((err) => {
        if (!this.closed) console.warn("call: signal not applied", signal.kind, err);
      });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    const pc = this.pc;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = null;
    pc.onconnectionstatechange = pc.onicegatheringstatechange = null;
    pc.close();
  }

  #send(signal) {
    if (!this.closed) this.send(signal);
  }

  #setState(state) {
    if (this.closed || this.state === state) return;
    this.state = state;
    if (state === "connected") clearTimeout(this.timer);
    this.onChange();
  }

  #addTracks() {
    this.tracksAdded = true;
    for (const track of this.local.getTracks()) this.pc.addTrack(track, this.local);
  }

  async #negotiate() {
    if (!this.mayOffer || this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.#send({ kind: "offer", sdp: this.pc.localDescription.sdp });
    } catch (err) {
      if (!this.closed) console.warn("call: could not make an offer", err);
    } finally {
      this.makingOffer = false;
    }
  }

  async #handle(signal) {
    const pc = this.pc;
    if (this.closed) return;
    if (signal.kind === "ice") {
      const candidate = {
        candidate: signal.candidate,
        sdpMid: signal.sdp_mid ?? null,
        sdpMLineIndex: signal.sdp_m_line_index ?? null,
      };
      if (pc.remoteDescription) await this.#addCandidate(candidate);
      else this.pendingCandidates.push(candidate);
      return;
    }
    if (signal.kind !== "offer" && signal.kind !== "answer") return;
    const offer = signal.kind === "offer";
    const collision = offer && (this.makingOffer || pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    if (!offer && pc.signalingState !== "have-local-offer") return; // a stale answer
    // On a collision the polite side's own offer is rolled back implicitly.
    await pc.setRemoteDescription({ type: signal.kind, sdp: signal.sdp });
    for (const candidate of this.pendingCandidates.splice(0)) await this.#addCandidate(candidate);
    if (!offer) return;
    if (!this.tracksAdded) this.#addTracks();
    this.mayOffer = true;
    await pc.setLocalDescription();
    this.#send({ kind: "answer", sdp: pc.localDescription.sdp });
  }

  async #addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      // Candidates of an offer we ignored (collision) are expected to fail.
      if (!this.ignoreOffer && !this.closed) console.warn("call: ICE candidate refused", err);
    }
  }
}
