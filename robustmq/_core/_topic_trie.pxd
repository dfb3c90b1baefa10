# The node and trie layouts of the compiled topic trie, readable in one place and
# cimportable by other Cython modules (the router). Behaviour lives in _topic_trie.pyx;
# the pure-Python reference with the same fields is topic_trie.py.

cimport cython


@cython.final
cdef class _SubNode:
    # Containers are None until first used: in a large trie most nodes need only one.
    cdef dict children          # literal level -> _SubNode
    cdef _SubNode plus          # the '+' level
    cdef _SubNode hash          # the '#' level
    cdef dict subs              # subscriber -> (subscriber, options), the pair match returns
    cdef dict shared            # group -> {subscriber -> options}
    cdef str filter             # the filter ending here, while it has subscribers

    cdef bint is_empty(self)


@cython.final
cdef class _TopicNode:
    cdef dict children          # level -> _TopicNode
    cdef tuple item             # (topic, value) as match returns it; None when not stored


cdef class SubscriptionTrie:
    cdef _SubNode _root
    cdef Py_ssize_t _count
    cdef readonly long long generation


cdef class TopicTree:
    cdef _TopicNode _root
    cdef Py_ssize_t _count
