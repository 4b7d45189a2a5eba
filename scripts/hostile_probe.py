#!/usr/bin/env python3
"""Hostile-client cases, byte for byte, against any HTTP/1.1 reverse proxy on 127.0.0.1.

    hostile_probe.py upstream PORT LOG    # the recording upstream the proxy forwards to
    hostile_probe.py run PROXY_PORT LOG   # every case; one line each: case, answer, what the
                                          # upstream saw (from LOG)

The answer is the status the client got ("closed" when the connection ended without one,
"open>15s" when nothing happened within 15 s). The upstream reads each body by its framing
(Content-Length or chunked), counts the chunks it received, and appends one line per request to
LOG: the case (the request path), the Host it got, its framing headers, body bytes and chunks.
This is how docs/HARDENING.md's table was made (weir before and after, nginx 1.22, HAProxy 2.6);
it needs only Python 3. Only for 127.0.0.1.
"""

import socket
import sys
import threading
import time


def read_line(f):
    return f.readline(70000)


def upstream(port, log):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(512)

    def serve(conn):
        f = conn.makefile("rb")
        try:
            while True:
                line = read_line(f)
                if not line:
                    return
                parts = line.decode("latin-1").split()
                path = parts[1] if len(parts) > 1 else "?"
                headers = []
                while True:
                    h = read_line(f)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers.append((name.strip().lower(), value.strip()))
                get = lambda n: [v for k, v in headers if k == n]
                body, chunks = 0, 0
                if get("transfer-encoding"):
                    while True:
                        size = int(read_line(f).split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while read_line(f) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        body += len(f.read(size))
                        chunks += 1
                        read_line(f)
                elif get("content-length"):
                    body = len(f.read(int(get("content-length")[0])))
                with open(log, "a") as out:
                    out.write(
                        f"{path}\thost={get('host')} te={get('transfer-encoding')} "
                        f"cl={get('content-length')} upgrade={get('upgrade')} "
                        f"body={body} chunks={chunks}\n"
                    )
                answer = b"upstream"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer)
                )
        except Exception:
            return
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


CASES = []


def case(name, data, wait=15.0):
    CASES.append((name, data, wait))


def head(path, extra, method="GET", version="HTTP/1.1", host="app"):
    h = f"{method} {path} {version}\r\n"
    if host is not None:
        h += f"host: {host}\r\n"
    return (h + extra + "\r\n").encode()


def build():
    post = lambda p, extra: head(p, extra, "POST")
    te = "transfer-encoding: chunked\r\n"
    # Framing: Transfer-Encoding and Content-Length.
    case("TE and CL (CL first)", post("/c/te-cl", "content-length: 5\r\n" + te) + b"0\r\n\r\n")
    case("TE and CL (TE first)", post("/c/cl-te", te + "content-length: 5\r\n") + b"0\r\n\r\n")
    case("TE: CHUNKED with CL", post("/c/upper", "transfer-encoding: CHUNKED\r\ncontent-length: 5\r\n") + b"0\r\n\r\n")
    case("TE: <tab>chunked with CL", post("/c/tab", "transfer-encoding:\tchunked\r\ncontent-length: 5\r\n") + b"0\r\n\r\n")
    case("TE: identity, chunked", post("/c/identity", "transfer-encoding: identity, chunked\r\n") + b"0\r\n\r\n")
    case("two TE: chunked", post("/c/two-te", te + te) + b"0\r\n\r\n")
    case("TE: gzip", post("/c/gzip", "transfer-encoding: gzip\r\n") + b"0\r\n\r\n")
    case("the same CL twice", post("/c/two-cl", "content-length: 3\r\ncontent-length: 3\r\n") + b"abc")
    case("two different CL", post("/c/cl-differ", "content-length: 3\r\ncontent-length: 4\r\n") + b"abcd")
    # Broken chunked bodies.
    for name, body in [
        ("chunk size zz", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("chunk size past 64 bits", b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ("chunk size -1", b"-1\r\nabc\r\n0\r\n\r\n"),
        ("chunk size 0x5", b"0x5\r\nabcde\r\n0\r\n\r\n"),
        ("chunk data longer than its size", b"2\r\nabcdef\r\n0\r\n\r\n"),
        ("bare LF chunk lines", b"3\nabc\n0\n\n"),
        ("64 KiB chunk extension", b"3;x=" + b"a" * 65536 + b"\r\nabc\r\n0\r\n\r\n"),
    ]:
        case(name, post("/c/" + name.replace(" ", "-"), te) + body)
    case("GET with a chunked body", head("/c/get-body", te) + b"5\r\nhello\r\n0\r\n\r\n")
    case("200,000 one-byte chunks", post("/c/tiny", te) + b"1\r\nx\r\n" * 200000 + b"0\r\n\r\n", wait=60)
    # Host and authority.
    case("two Host", head("/c/two-host", "host: other\r\n"))
    case("HTTP/1.1 without Host", head("/c/no-host", "", host=None))
    case("HTTP/1.1 with an empty Host", head("/c/empty-host", "", host=""))
    case("HTTP/1.0 without Host", head("/c/http10", "", version="HTTP/1.0", host=None))
    case("Connection: host", head("/c/conn-host", "connection: host\r\n"))
    case("absolute form, other authority", head("http://other/c/absolute", ""))
    case("absolute form, same authority", head("http://app/c/absolute-same", ""))
    # Methods and upgrades.
    case("CONNECT", b"CONNECT app:443 HTTP/1.1\r\nhost: app:443\r\n\r\n")
    case("Upgrade: h2c", head("/c/h2c", "connection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n"))
    case("Upgrade: foo (not allowed)", head("/c/foo", "connection: upgrade\r\nupgrade: foo\r\n"))
    case("101 header fields", head("/c/headers", "".join(f"x-{i}: v\r\n" for i in range(101))))
    # Connections that make no progress.
    case("silent TCP connection", b"", wait=15)
    case("HTTP/2 preface and SETTINGS, no request", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", wait=15)
    case("upload stalls after 10 of 100 bytes", post("/c/stall", "content-length: 100\r\n") + b"0123456789", wait=15)


def run_case(port, data, wait):
    s = socket.create_connection(("127.0.0.1", port))
    started = time.time()
    try:
        s.sendall(data)
    except OSError:
        pass
    s.settimeout(wait)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        return f"open>{wait:.0f}s"
    except OSError:
        pass
    finally:
        s.close()
    took = time.time() - started
    if got.startswith(b"HTTP/"):
        return got.split(b"\r\n")[0].decode("latin-1").split(" ", 2)[1]
    return f"closed after {took:.1f}s" if took > 1 else "closed"


def main():
    if sys.argv[1] == "upstream":
        upstream(int(sys.argv[2]), sys.argv[3])
    build()
    port, log = int(sys.argv[2]), sys.argv[3]
    for name, data, wait in CASES:
        open(log, "w").close()
        answer = run_case(port, data, wait)
        time.sleep(0.3)
        seen = open(log).read().strip().replace("\n", " | ")
        print(f"{name}\t{answer}\t{seen or '-'}", flush=True)


if __name__ == "__main__":
    main()
