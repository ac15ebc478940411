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

static uint64_t peer_hash_of(const void *e)
{
    return ((const rm_peer *)e)->hash;
}

void rm_peers_init(rm_peers *p, const uint8_t key[16])
{
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, sizeof p->key);
    rm_ptrtab_init(&p->tab, 16, peer_hash_of);
}

static void peer_free(rm_peer *e)
{
    free(e->id);
    free(e);
}

void rm_peers_destroy(rm_peers *p)
{
    for (size_t i = 0; p->tab.slots && i <= p->tab.mask; i++)
        if (p->tab.slots[i])
            peer_free(p->tab.slots[i]);
    rm_ptrtab_destroy(&p->tab);
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
    const rm_ptrtab *t = &p->tab;
    for (size_t i = h & t->mask; t->slots[i]; i = (i + 1) & t->mask) {
        rm_peer *e = t->slots[i];
        if (e->hash == h && rm_peer_is(e, id, len, authenticated))
            return e;
    }
    return NULL;
}

rm_peer *rm_peers_ref(rm_peers *p, const char *id, size_t len, int authenticated)
{
    rm_peer *e = rm_peers_find(p, id, len, authenticated);
    if (e) {
        e->leases++;
        return e;
    }
    e = rm_xcalloc(1, sizeof *e);
    e->id = rm_xstrndup(len ? id : "", len);
    e->len = len;
    e->authenticated = !!authenticated;
    e->leases = 1;
    e->hash = peer_hash(p, id, len, authenticated);
    rm_ptrtab_add(&p->tab, e);
    return e;
}

void rm_peers_unref(rm_peers *p, rm_peer *e)
{
    if (--e->leases > 0)
        return;
    rm_ptrtab_del(&p->tab, e);
    peer_free(e);
}
