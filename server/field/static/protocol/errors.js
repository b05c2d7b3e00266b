// Protocol errors with the stable codes of sync_protocol/errors.py (docs/protocol.md §11).
export class ProtocolError extends Error {
  constructor(code, message, { where, zh } = {}) {
    super(message || code);
    this.code = code;
    if (where !== undefined) this.where = where;
    this.messageZh = zh || message || code;
  }
}

