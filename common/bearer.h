/* bearer.h -- bearer tokens (RFC 6750) for both daemons: reading the
 * token file, and checking an Authorization value against the token, the
 * same way for gRPC metadata and HTTP headers. */
#ifndef RM_BEARER_H
#define RM_BEARER_H

#include <stddef.h>

/* Reads a bearer token from path: the file's whole first line (any
 * length: JWTs run to kilobytes), blanks trimmed at both ends. Returns a
 * malloc'd token, or NULL with a reason in err (unreadable, empty, or a
 * byte that is not printable ASCII: it could not travel in a header). */
char *rm_read_token_file(const char *path, char *err, size_t errlen);

/* Whether value (len bytes, need not be NUL-terminated) is
 * "Bearer <token>": the scheme in any case ("bearer", "BEARER"), one or
 * more spaces, then exactly token. The comparison of the token takes the
 * same time wherever the first difference is. */
int rm_bearer_matches(const char *token, const char *value, size_t len);

/* Whether header lines ("Name: value\r\n"..., as a server collected them;
 * may be NULL) carry an Authorization header that matches token. */
int rm_bearer_in_headers(const char *token, const char *lines);

#endif
