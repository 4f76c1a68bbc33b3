"""The dev/CI ClickHouse HTTP server's parts (the entry point is ../server.py).

* errors    ClickHouse's error shape and HTTP status mapping
* framing   ClickHouse's own compressed blocks (decompress=1 / compress=1)
* encoding  HTTP Content-Encoding / Accept-Encoding codecs, with size caps
* sql       a ClickHouse-faithful lexer: FORMAT clauses, readonly, refused features
* engine    chdb sessions: a pool for sessionless requests, HTTP sessions, scheduling
* external  multipart external data (temporary tables for one query)
* handler   the HTTP request handler and server
"""
