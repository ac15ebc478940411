/* route_key.h -- the routing key of a request and the cluster-hot
 * prefixes it steps past, as pure functions (router/README.md, "Routing
 * key: adaptive prefix blocks").
 *
 * A request's prefix is cut into blocks of key_block_tokens, hashed as a
 * chain (common/prefix_key.h); its key is the first block past its deepest
 * hot prefix. A prefix is hot when a large share of the cluster's traffic
 * carries it and then goes on in different directions (a shared system
 * prompt), never when one conversation is all of it.
 *
 * No clock, no I/O, no router state: route_key.c feeds them from the
 * nodes' Stats, and every replica reading the same Stats computes the
 * same set and the same keys. */
#ifndef RM_ROUTE_KEY_H
#define RM_ROUTE_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "radixmesh.pb.h"
#include "router.h" /* rm_router_config */

/* A prefix is hot only if at least this share of the requests carrying it
 * went on through a block other than the leading one. The history of a
 * single conversation (0 branching) is then never hot, however much of the
 * traffic it is -- at low traffic, one chat is all of it -- while a prompt
 * shared by two conversations in turn is (about one half). */
#define RM_ROUTE_HOT_BRANCH 0.1

/* The key of tokens[0..n) in namespace ns under cfg (key_mode,
 * fixed_key_tokens, key_block_tokens, max_key_blocks -- 0: as deep as
 * the nodes' sketches, rm_hotset_depth; at most RM_HOT_MAX_BLOCKS), given the hot set hot[0..nhot)
 * (sorted). *key_tokens: how many tokens the key covers. In fixed mode,
 * the first fixed_key_tokens; else the first block past the deepest hot
 * prefix; a request shorter than a block, or hot all through (plus a
 * partial block), is spread by a hash of its remaining tokens. Linear in
 * the tokens it looks at (one chained hash per block). */
uint64_t rm_route_key(const rm_router_config *cfg, const uint64_t *hot, size_t nhot, const char *ns,
                      const uint32_t *tokens, size_t n, uint32_t *key_tokens);

/* 1 if h is in the sorted set hot[0..nhot). */
int rm_route_is_hot(const uint64_t *hot, size_t nhot, uint64_t h);

/* Of the requests n nodes report for one prefix, the weight that continued
 * other than through the overall leading continuation: each node's own
 * "other", plus what went through a node's leader that is not the overall
 * one (two conversations behind one prompt on two nodes each lead their
 * node: the cluster sees them branch though neither node does). */
double rm_route_branching(const radixmesh_v1_HotPrefix *reports, size_t n);

/* The share of all traffic that makes a prefix hot: configured when > 0,
 * else max(0.02, 0.5 / healthy nodes) -- half a node's fair share -- and 1
 * with no healthy node. */
double rm_route_hot_share(double configured, uint32_t healthy);

/* The hot set of the reports of all nodes (in any order; sorted by hash in
 * place), whose requests in the nodes' windows total `total`: the hashes
 * whose requests, summed over the nodes, are at least share * total and
 * branch (RM_ROUTE_HOT_BRANCH). Written sorted into out (room for n).
 * Returns how many. */
size_t rm_route_hot_set(radixmesh_v1_HotPrefix *reports, size_t n, double total, double share,
                        uint64_t *out);

#endif
