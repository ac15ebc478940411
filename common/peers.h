/* peers.h -- leases held per caller, for the node's per-peer lease share.
 *
 * A peer is an identity text plus its kind: an authenticated TLS client
 * identity (certificate SAN/CN) or merely the peer's network address. The
 * two kinds never compare equal, even with the same text. An entry lives
 * while its peer holds at least one lease (rm_peers_ref / rm_peers_unref),
 * so the table never holds more entries than there are leases. Slots are
 * chosen by SipHash under the owner's secret key: callers cannot pick
 * identities that collide. Not thread-safe: the cache's owner thread. */
#ifndef RM_PEERS_H
#define RM_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "ptrtab.h"

typedef struct rm_peer {
    char *id; /* NUL-terminated copy (the text may hold other NULs) */
    size_t len;
    int authenticated;
    uint32_t leases;
    uint64_t hash;
} rm_peer;

typedef struct rm_peers {
    rm_ptrtab tab; /* rm_peer entries by hash */
    uint8_t key[16];
} rm_peers;

/* key: 16 secret bytes (copied). */
void rm_peers_init(rm_peers *p, const uint8_t key[16]);

/* Frees every entry; pointers handed out are invalid afterwards. */
void rm_peers_destroy(rm_peers *p);

/* The entry of (id, authenticated), or NULL when that peer holds nothing. */
rm_peer *rm_peers_find(const rm_peers *p, const char *id, size_t len, int authenticated);

/* Counts one more lease for (id, authenticated), creating its entry.
 * Returns the entry (owned by the table; valid until its last unref). */
rm_peer *rm_peers_ref(rm_peers *p, const char *id, size_t len, int authenticated);

/* Counts one lease less; the entry is freed when none is left. */
void rm_peers_unref(rm_peers *p, rm_peer *peer);

/* Whether peer is (id, authenticated). */
int rm_peer_is(const rm_peer *peer, const char *id, size_t len, int authenticated);

#endif
