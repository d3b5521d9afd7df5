# An HTTPS server for tls_spec: answers each connection with a response
# whose body is framed by the connection's end, then closes the socket
# without TLS close_notify the first time, after it the second.
# usage: tls_cut.py PORT CERT KEY
import socket
import ssl
import sys

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen()
served = 0
while served < 2:
    c, _ = ls.accept()
    try:
        s = ctx.wrap_socket(c, server_side=True)  # (the spec's port probe fails here)
    except (ssl.SSLError, OSError):
        c.close()
        continue
    s.recv(65536)
    s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length, ended by the close")
    if served == 1:
        s = s.unwrap()  # sends close_notify
    s.close()
    served += 1
