#include "peers.h"

#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "util.h"

static uint64_t peer_hash(const rm_peers *p, const char *id, size_t len, int authenticated)
{
    /* The kind is part of the key: an address never aliases an identity. */
    return rm_siphash24(p->key, id, len) ^ (authenticated ? 0x9e3779b97f4a7c15ULL : 0);
}

void rm_peers_init(rm_peers *p, const uint8_t key[16])
{
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, sizeof p->key);
    p->mask = 15;
    p->slots = rm_xcalloc(p->mask + 1, sizeof *p->slots);
}

static void peer_free(rm_peer *e)
{
    free(e->id);
    free(e);
}

void rm_peers_destroy(rm_peers *p)
{
    for (size_t i = 0; p->slots && i <= p->mask; i++)
        if (p->slots[i])
            peer_free(p->slots[i]);
    free(p->slots);
    memset(p, 0, sizeof *p);
}

int rm_peer_is(const rm_peer *peer, const char *id, size_t len, int authenticated)
{
    return peer->len == len && !peer->authenticated == !authenticated &&
           (len == 0 || memcmp(peer->id, id, len) == 0);
}

rm_peer *rm_peers_find(const rm_peers *p, const char *id, size_t len, int authenticated)
{
    uint64_t h = peer_hash(p, id, len, authenticated);
    for (size_t i = h & p->mask;; i = (i + 1) & p->mask) {
        rm_peer *e = p->slots[i];
        if (!e)
            return NULL;
        if (e->hash == h && rm_peer_is(e, id, len, authenticated))
            return e;
    }
}

static void slot_put(rm_peer **slots, size_t mask, rm_peer *e)
{
    size_t i = e->hash & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = e;
}

rm_peer *rm_peers_ref(rm_peers *p, const char *id, size_t len, int authenticated)
{
    rm_peer *e = rm_peers_find(p, id, len, authenticated);
    if (e) {
        e->leases++;
        return e;
    }
    if ((p->n + 1) * 2 > p->mask + 1) {
        size_t ncap = (p->mask + 1) * 2;
        rm_peer **ns = rm_xcalloc(ncap, sizeof *ns);
        for (size_t i = 0; i <= p->mask; i++)
            if (p->slots[i])
                slot_put(ns, ncap - 1, p->slots[i]);
        free(p->slots);
        p->slots = ns;
        p->mask = ncap - 1;
    }
    e = rm_xcalloc(1, sizeof *e);
    e->id = rm_xstrndup(len ? id : "", len);
    e->len = len;
    e->authenticated = !!authenticated;
    e->leases = 1;
    e->hash = peer_hash(p, id, len, authenticated);
    slot_put(p->slots, p->mask, e);
    p->n++;
    return e;
}

void rm_peers_unref(rm_peers *p, rm_peer *e)
{
    if (--e->leases > 0)
        return;
    size_t i = e->hash & p->mask;
    while (p->slots[i] != e)
        i = (i + 1) & p->mask;
    /* Backward-shift deletion, as in the lease table. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & p->mask;
        if (!p->slots[j])
            break;
        size_t home = p->slots[j]->hash & p->mask;
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            p->slots[i] = p->slots[j];
            i = j;
        }
    }
    p->slots[i] = NULL;
    p->n--;
    peer_free(e);
}
