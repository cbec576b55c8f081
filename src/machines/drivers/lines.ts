// Turns a child's stdout/stderr into one log line per output line. Lines are capped so that a
// child printing megabytes without a newline cannot make petrel buffer without bound; the rest
// of an overlong line is dropped up to the next newline.

import type { Logger } from 'pino';

export class LineSink {
  private readonly log: Logger;
  private readonly warn: boolean;
  private readonly max: number;
  private buf: string;
  private dropping: boolean;

  constructor(log: Logger, warn: boolean, maxLineChars: number) {
    this.log = log;
    this.warn = warn;
    this.max = maxLineChars;
    this.buf = '';
    this.dropping = false;
  }

  /** `chunk` is already decoded (setEncoding('utf8')), so multi-byte characters are never split. */
  write(chunk: string): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', start);
      if (nl === -1) {
        this.append(chunk.slice(start));
        return;
      }
      this.append(chunk.slice(start, nl));
      if (!this.dropping) this.emit(this.buf);
      this.buf = '';
      this.dropping = false;
      start = nl + 1;
    }
  }

  flush(): void {
    if (!this.dropping && this.buf.length > 0) this.emit(this.buf);
    this.buf = '';
    this.dropping = false;
  }

  private append(part: string): void {
    if (this.dropping || part.length === 0) return;
    this.buf += part;
    if (this.buf.length > this.max) {
      this.emit(`${this.buf.slice(0, this.max)} [line truncated]`);
      this.buf = '';
      this.dropping = true;
    }
  }

  private emit(line: string): void {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (text.length === 0) return;
    if (this.warn) this.log.warn(text);
    else this.log.info(text);
  }
}
