/* list.h -- intrusive doubly-linked lists, by macro.
 *
 * An element carries its own link fields (any two member names, so one
 * element may sit in several lists); a list is a head pointer, NULL when
 * empty. Adding is at the head; deleting needs no walk.
 *
 *   head -> [a] <-> [b] <-> [c] -> NULL      a->prev == NULL
 */
#ifndef RM_LIST_H
#define RM_LIST_H

/* Puts x at the front of the list at head. */
#define RM_LIST_ADD(head, x, prev, next)                                                           \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)

/* Takes x (which must be in it) out of the list at head. */
#define RM_LIST_DEL(head, x, prev, next)                                                           \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
    } while (0)

#endif
