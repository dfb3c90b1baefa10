# cython: language_level=3, boundscheck=False, wraparound=False, auto_pickle=False
"""The compiled twin of topic_trie.py: topic name/filter validation and the two tries.

Same public names, behaviour and error messages as the pure-Python reference, which is the
place to read the rules (MQTT 5.0 §4.7, §4.8.2). What differs is only how: nodes are cdef
classes (layout in _topic_trie.pxd), dict look-ups and iteration use the borrowed-reference
C API, each level of the topic is cut once, and the frontier of nodes being matched is
walked by index with no Python call per level. Validation is one pass over the code points.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from cpython.unicode cimport (
    PyUnicode_FindChar,
    PyUnicode_GET_LENGTH,
    PyUnicode_READ_CHAR,
    PyUnicode_Substring,
)

from robustmq.errors import MqttError

__all__ = [
    "SHARE_PREFIX",
    "SubscriptionTrie",
    "TopicTree",
    "parse_shared",
    "validate_topic_filter",
    "validate_topic_name",
]

TOPIC_NAME_INVALID = 0x90
TOPIC_FILTER_INVALID = 0x8F
MAX_TOPIC_BYTES = 65535
SHARE_PREFIX = "$share/"

cdef Py_ssize_t _SHARE_PREFIX_LEN = 7
cdef Py_ssize_t _MAX_TOPIC_BYTES = 65535


cdef inline Py_ssize_t _utf8_width(Py_UCS4 ch) noexcept:
    if ch < 0x80:
        return 1
    if ch < 0x800:
        return 2
    if ch < 0x10000:
        return 3
    return 4


cdef inline bint _is_surrogate(Py_UCS4 ch) noexcept:
    return 0xD800 <= ch <= 0xDFFF


cdef inline bint _is_char(str s, Py_UCS4 ch) noexcept:
    return PyUnicode_GET_LENGTH(s) == 1 and PyUnicode_READ_CHAR(s, 0) == ch


cdef inline bint _starts_with_dollar(str s) noexcept:
    return PyUnicode_GET_LENGTH(s) > 0 and PyUnicode_READ_CHAR(s, 0) == u'$'


cdef str _bad_char_message(str what, Py_UCS4 ch, Py_ssize_t index):
    if ch == 0:
        return f"{what} contains U+0000 at character {index}"
    if ch == u'+' or ch == u'#':
        return f"{what} contains wildcard {chr(ch)!r} at character {index}"
    return f"{what} contains surrogate U+{<long>ch:04X} at character {index}, which is not UTF-8"


def validate_topic_name(str topic not None, Py_ssize_t max_levels=0):
    """Raise MqttError(0x90) unless ``topic`` is a valid MQTT 5 topic name (§4.7.3).

    ``max_levels`` > 0 limits the number of ``/``-separated levels.
    """
    cdef Py_ssize_t index = 0
    cdef Py_ssize_t size = 0
    cdef Py_ssize_t levels = 1
    cdef Py_UCS4 ch
    if PyUnicode_GET_LENGTH(topic) == 0:
        raise MqttError(TOPIC_NAME_INVALID, "topic name is empty")
    for ch in topic:
        if ch == u'/':
            levels += 1
        elif ch == 0 or ch == u'+' or ch == u'#' or _is_surrogate(ch):
            raise MqttError(TOPIC_NAME_INVALID, _bad_char_message("topic name", ch, index))
        size += _utf8_width(ch)
        index += 1
    if size > _MAX_TOPIC_BYTES:
        raise MqttError(
            TOPIC_NAME_INVALID, f"topic name is {size} UTF-8 bytes, more than {MAX_TOPIC_BYTES}"
        )
    if 0 < max_levels < levels:
        raise MqttError(
            TOPIC_NAME_INVALID,
            f"topic name has {levels} levels, more than the limit of {max_levels}",
        )


def validate_topic_filter(str topic_filter not None, Py_ssize_t max_levels=0):
    """Raise MqttError(0x8F) unless ``topic_filter`` is a valid MQTT 5 topic filter.

    Wildcards follow §4.7.1; ``$share/{group}/{filter}`` follows §4.8.2, and then
    ``max_levels`` > 0 limits the levels of the inner ``filter``.
    """
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(topic_filter)
    cdef Py_ssize_t index = 0
    cdef Py_ssize_t size = 0
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t slash, i, level_start, level_len, number
    cdef Py_UCS4 ch = 0
    cdef Py_UCS4 wild
    cdef str group
    if n == 0:
        raise MqttError(TOPIC_FILTER_INVALID, "topic filter is empty")
    for ch in topic_filter:
        if ch == 0 or _is_surrogate(ch):
            raise MqttError(
                TOPIC_FILTER_INVALID, _bad_char_message("topic filter", ch, index)
            )
        size += _utf8_width(ch)
        index += 1
    if size > _MAX_TOPIC_BYTES:
        raise MqttError(
            TOPIC_FILTER_INVALID,
            f"topic filter is {size} UTF-8 bytes, more than {MAX_TOPIC_BYTES}",
        )

    if topic_filter.startswith(SHARE_PREFIX):
        slash = topic_filter.find(u"/", _SHARE_PREFIX_LEN)
        group = topic_filter[_SHARE_PREFIX_LEN:n if slash < 0 else slash]
        if PyUnicode_GET_LENGTH(group) == 0:
            raise MqttError(TOPIC_FILTER_INVALID, "shared subscription has an empty group name")
        for ch in group:
            if ch == u'+' or ch == u'#':
                raise MqttError(
                    TOPIC_FILTER_INVALID,
                    f"shared subscription group {group!r} contains wildcard {chr(ch)!r}",
                )
        if slash < 0 or slash + 1 == n:
            raise MqttError(
                TOPIC_FILTER_INVALID, f"shared subscription group {group!r} has no topic filter"
            )
        start = slash + 1

    # §4.7.1.2/§4.7.1.3: a wildcard occupies a whole level, '#' only the last one.
    number = 1
    level_start = start
    level_len = 0
    wild = 0
    for i in range(start, n + 1):
        if i < n:
            ch = PyUnicode_READ_CHAR(topic_filter, i)
        if i == n or ch == u'/':
            if wild != 0:
                if level_len != 1:
                    raise MqttError(
                        TOPIC_FILTER_INVALID,
                        f"topic filter level {number} ({topic_filter[level_start:i]!r}) mixes "
                        "a wildcard with other characters",
                    )
                if wild == u'#' and i != n:
                    raise MqttError(
                        TOPIC_FILTER_INVALID,
                        f"topic filter has '#' at level {number}, but '#' must be the last level",
                    )
            if i < n:
                number += 1
                level_start = i + 1
                level_len = 0
                wild = 0
        else:
            level_len += 1
            if ch == u'+' or ch == u'#':
                wild = ch
    if 0 < max_levels < number:
        raise MqttError(
            TOPIC_FILTER_INVALID,
            f"topic filter has {number} levels, more than the limit of {max_levels}",
        )


def parse_shared(str topic_filter not None):
    """``"$share/g/a/+"`` -> ``("g", "a/+")``; None when the filter is not shared.

    Does not validate: ``"$share/g"`` gives ``("g", "")``.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, _, inner = topic_filter[_SHARE_PREFIX_LEN:].partition(u"/")
    return group, inner


# A filter may be 32768 levels deep; the trashcan turns the chain of deallocations that
# dropping such a branch starts into a loop instead of a C recursion that overflows the stack.
@cython.final
@cython.trashcan(True)
cdef class _SubNode:
    cdef bint is_empty(self):
        return (
            self.children is None
            and self.plus is None
            and self.hash is None
            and self.subs is None
            and self.shared is None
        )


cdef inline int _collect(_SubNode node, list normal, list shared) except -1:
    cdef Py_ssize_t pos = 0
    cdef PyObject* key = NULL
    cdef PyObject* value = NULL
    cdef object group, members
    if node.subs is not None:
        if PyDict_Size(node.subs) > 8:
            # list.extend sizes the list once from the view's length; appends would regrow it.
            normal.extend(node.subs.values())
        else:
            while PyDict_Next(node.subs, &pos, &key, &value):
                normal.append(<object>value)
    if node.shared is not None:
        pos = 0
        while PyDict_Next(node.shared, &pos, &key, &value):
            # Own the borrowed pair before allocating the tuple: a collection it triggers
            # may run finalizers that change the trie.
            group = <object>key
            members = <object>value
            shared.append((group, node.filter, members))
    return 0


cdef class SubscriptionTrie:
    """Topic filters -> subscribers, looked up by a published topic name.

    ``match`` returns shared groups' member dicts as the trie's own dicts, not copies: the
    caller must not mutate them, and must not keep them across a change to the trie.
    ``generation`` grows by one on every change that alters what ``match`` returns, so
    callers can cache match results per topic and drop them when it moves.
    """

    def __cinit__(self):
        self._root = _SubNode()
        self._count = 0
        self.generation = 0

    def __len__(self):
        return self._count

    def add(self, str topic_filter not None, subscriber, options):
        """Store ``subscriber -> options`` at the filter (assumed valid).

        Returns True for a new entry, False when it replaced the options of an existing one.
        """
        cdef str group = None
        cdef str inner = topic_filter
        cdef str level
        cdef _SubNode node = self._root
        cdef _SubNode child
        cdef PyObject* found
        cdef dict members
        cdef bint new
        if topic_filter.startswith(SHARE_PREFIX):
            group, _, inner = topic_filter[_SHARE_PREFIX_LEN:].partition(u"/")
        for level in inner.split(u"/"):
            if _is_char(level, u'+'):
                if node.plus is None:
                    node.plus = _SubNode()
                node = node.plus
            elif _is_char(level, u'#'):
                if node.hash is None:
                    node.hash = _SubNode()
                node = node.hash
            else:
                if node.children is None:
                    node.children = {}
                found = PyDict_GetItem(node.children, level)
                if found is NULL:
                    child = _SubNode()
                    node.children[level] = child
                else:
                    child = <_SubNode>found
                node = child
        node.filter = inner
        # The dicts are held in locals (owned references) because hashing and comparing
        # the subscriber runs its own code, which must not be able to pull them away.
        if group is None:
            if node.subs is None:
                node.subs = {}
            members = node.subs
            new = subscriber not in members
            members[subscriber] = (subscriber, options)
        else:
            if node.shared is None:
                node.shared = {}
            found = PyDict_GetItem(node.shared, group)
            if found is NULL:
                members = {}
                node.shared[group] = members
            else:
                members = <dict>found
            new = subscriber not in members
            members[subscriber] = options
        if new:
            self._count += 1
        self.generation += 1
        return new

    def remove(self, str topic_filter not None, subscriber):
        """Remove one entry and prune the nodes left empty; False if it was not there."""
        cdef str group = None
        cdef str inner = topic_filter
        cdef str level
        cdef _SubNode node = self._root
        cdef _SubNode parent
        cdef PyObject* found
        cdef dict members, groups
        cdef list path = []
        cdef Py_ssize_t i
        if topic_filter.startswith(SHARE_PREFIX):
            group, _, inner = topic_filter[_SHARE_PREFIX_LEN:].partition(u"/")
        for level in inner.split(u"/"):
            path.append((node, level))
            if _is_char(level, u'+'):
                node = node.plus
            elif _is_char(level, u'#'):
                node = node.hash
            elif node.children is None:
                return False
            else:
                found = PyDict_GetItem(node.children, level)
                if found is NULL:
                    return False
                node = <_SubNode>found
            if node is None:
                return False
        if group is None:
            members = node.subs
            if members is None or subscriber not in members:
                return False
            del members[subscriber]
            if not members:
                node.subs = None
        else:
            groups = node.shared
            if groups is None:
                return False
            found = PyDict_GetItem(groups, group)
            if found is NULL:
                return False
            members = <dict>found
            if subscriber not in members:
                return False
            del members[subscriber]
            if not members:
                del groups[group]
                if not groups:
                    node.shared = None
        self._count -= 1
        self.generation += 1
        if node.subs is None and node.shared is None:
            node.filter = None
        for i in range(PyList_GET_SIZE(path) - 1, -1, -1):
            if not node.is_empty():
                break
            parent, level = <tuple>PyList_GET_ITEM(path, i)
            if _is_char(level, u'+'):
                parent.plus = None
            elif _is_char(level, u'#'):
                parent.hash = None
            else:
                del parent.children[level]
                if not parent.children:
                    parent.children = None
            node = parent
        return True

    def match(self, str topic not None):
        """The subscriptions whose filter matches ``topic`` (a valid topic name).

        Returns ``(normal, shared)``: ``(subscriber, options)`` per matching non-shared
        entry (a subscriber matching through two filters appears twice), and ``(group,
        filter, members)`` per matching shared group, ``members`` being the trie's own dict.
        """
        cdef list normal = []
        cdef list shared = []
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(topic)
        cdef Py_ssize_t start = 0
        cdef Py_ssize_t end, i
        # One queue for the whole walk: the frontier of a level is nodes[lo:hi], and the
        # next level's frontier is appended behind it, so no list is allocated per level.
        cdef list nodes = [self._root]
        cdef Py_ssize_t lo = 0
        cdef Py_ssize_t hi = 1
        cdef _SubNode node
        cdef str level
        cdef PyObject* child
        # MQTT 5.0 §4.7.2: a filter starting with a wildcard does not match a '$' topic.
        cdef bint wild = not _starts_with_dollar(topic)
        while True:
            # Levels are cut one at a time, so a walk that stops early cuts no more.
            end = PyUnicode_FindChar(topic, u'/', start, n, 1)
            if end < 0:
                end = n
            level = PyUnicode_Substring(topic, start, end)
            for i in range(lo, hi):
                node = <_SubNode>PyList_GET_ITEM(nodes, i)
                # §4.7.1.2: '#' also matches the parent level, so it matches here already.
                if wild and node.hash is not None:
                    _collect(node.hash, normal, shared)
                if node.children is not None:
                    child = PyDict_GetItem(node.children, level)
                    if child is not NULL:
                        nodes.append(<object>child)
                # §4.7.1.3: '+' matches exactly one level, an empty one included.
                if wild and node.plus is not None:
                    nodes.append(node.plus)
            lo = hi
            hi = PyList_GET_SIZE(nodes)
            if lo == hi:
                return normal, shared
            if end == n:
                break
            start = end + 1
            wild = True
        for i in range(lo, hi):
            node = <_SubNode>PyList_GET_ITEM(nodes, i)
            _collect(node, normal, shared)
            if node.hash is not None:
                _collect(node.hash, normal, shared)
        return normal, shared

    def subscriptions(self):
        """``(filter, subscriber, options)`` per entry, shared ones with their ``$share/g/``.

        Safe against changes made while iterating; entries changed meanwhile may or may not
        be seen.
        """
        cdef list stack = [self._root]
        cdef _SubNode node
        while stack:
            node = stack.pop()
            topic_filter = node.filter  # read once: removals while listing may clear it
            if node.subs is not None:
                for subscriber, options in list(node.subs.values()):
                    yield topic_filter, subscriber, options
            if node.shared is not None:
                for group, members in list(node.shared.items()):
                    full = f"{SHARE_PREFIX}{group}/{topic_filter}"
                    for subscriber, options in list(members.items()):
                        yield full, subscriber, options
            if node.children is not None:
                stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)

    def _node_count(self):
        """Nodes in the trie, the root included: for pruning tests and memory metrics."""
        cdef Py_ssize_t count = 0
        cdef list stack = [self._root]
        cdef _SubNode node
        while PyList_GET_SIZE(stack):
            node = stack.pop()
            count += 1
            if node.children is not None:
                stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)
        return count


@cython.final
@cython.trashcan(True)
cdef class _TopicNode:
    pass


cdef int _collect_subtree(_TopicNode top, list found, bint skip_dollar) except -1:
    cdef list stack = []
    cdef _TopicNode node
    cdef Py_ssize_t pos = 0
    cdef PyObject* key = NULL
    cdef PyObject* value = NULL
    # §4.7.1.2: '#' matches its parent level too, so ``top`` itself counts.
    if top.item is not None:
        found.append(top.item)
    if top.children is not None:
        while PyDict_Next(top.children, &pos, &key, &value):
            if not (skip_dollar and _starts_with_dollar(<str>key)):
                stack.append(<object>value)
    while PyList_GET_SIZE(stack):
        node = stack.pop()
        if node.item is not None:
            found.append(node.item)
        if node.children is not None:
            pos = 0
            while PyDict_Next(node.children, &pos, &key, &value):
                stack.append(<object>value)
    return 0


cdef class TopicTree:
    """Topic names -> values (the retained messages), looked up by a topic filter.

    ``match`` walks literal levels directly, enumerates children only for '+', and whole
    subtrees only for '#', so it costs what it returns plus the path to it.
    """

    def __cinit__(self):
        self._root = _TopicNode()
        self._count = 0

    def __len__(self):
        return self._count

    def set(self, str topic not None, value):
        """Store ``value`` under ``topic``; True if the topic was not stored before."""
        cdef _TopicNode node = self._root
        cdef _TopicNode child
        cdef PyObject* found
        cdef str level
        cdef bint new
        for level in topic.split(u"/"):
            if node.children is None:
                node.children = {}
            found = PyDict_GetItem(node.children, level)
            if found is NULL:
                child = _TopicNode()
                node.children[level] = child
            else:
                child = <_TopicNode>found
            node = child
        new = node.item is None
        node.item = (topic, value)
        if new:
            self._count += 1
        return new

    def get(self, str topic not None, default=None):
        cdef _TopicNode node = self._root
        cdef PyObject* found
        cdef str level
        for level in topic.split(u"/"):
            if node.children is None:
                return default
            found = PyDict_GetItem(node.children, level)
            if found is NULL:
                return default
            node = <_TopicNode>found
        return default if node.item is None else node.item[1]

    def delete(self, str topic not None):
        """Remove ``topic`` and prune the nodes left empty; False if it was not stored."""
        cdef _TopicNode node = self._root
        cdef _TopicNode parent
        cdef PyObject* found
        cdef str level
        cdef list path = []
        cdef Py_ssize_t i
        for level in topic.split(u"/"):
            path.append((node, level))
            if node.children is None:
                return False
            found = PyDict_GetItem(node.children, level)
            if found is NULL:
                return False
            node = <_TopicNode>found
        if node.item is None:
            return False
        node.item = None
        self._count -= 1
        for i in range(PyList_GET_SIZE(path) - 1, -1, -1):
            if node.children is not None or node.item is not None:
                break
            parent, level = <tuple>PyList_GET_ITEM(path, i)
            del parent.children[level]
            if not parent.children:
                parent.children = None
            node = parent
        return True

    def match(self, str topic_filter not None):
        """``(topic, value)`` for every stored topic that ``topic_filter`` matches (§4.7)."""
        cdef list found = []
        cdef list levels = topic_filter.split(u"/")
        cdef Py_ssize_t nlevels = PyList_GET_SIZE(levels)
        # The frontier of a level is nodes[lo:hi]; see SubscriptionTrie.match.
        cdef list nodes = [self._root]
        cdef Py_ssize_t lo = 0
        cdef Py_ssize_t hi = 1
        cdef Py_ssize_t depth, i, pos
        cdef _TopicNode node
        cdef str level
        cdef PyObject* key = NULL
        cdef PyObject* value = NULL
        cdef PyObject* child
        cdef bint skip_dollar, plus
        for depth in range(nlevels):
            level = <str>PyList_GET_ITEM(levels, depth)
            # MQTT 5.0 §4.7.2: wildcards in the first level skip the '$' topics.
            skip_dollar = depth == 0
            if _is_char(level, u'#'):
                for i in range(lo, hi):
                    _collect_subtree(<_TopicNode>PyList_GET_ITEM(nodes, i), found, skip_dollar)
                return found
            plus = _is_char(level, u'+')
            for i in range(lo, hi):
                node = <_TopicNode>PyList_GET_ITEM(nodes, i)
                if node.children is None:
                    continue
                if plus:
                    pos = 0
                    while PyDict_Next(node.children, &pos, &key, &value):
                        if not (skip_dollar and _starts_with_dollar(<str>key)):
                            nodes.append(<object>value)
                else:
                    child = PyDict_GetItem(node.children, level)
                    if child is not NULL:
                        nodes.append(<object>child)
            lo = hi
            hi = PyList_GET_SIZE(nodes)
            if lo == hi:
                return found
        for i in range(lo, hi):
            node = <_TopicNode>PyList_GET_ITEM(nodes, i)
            if node.item is not None:
                found.append(node.item)
        return found

    def __iter__(self):
        """Every ``(topic, value)``, from a snapshot taken when iteration starts."""
        cdef list found = []
        _collect_subtree(self._root, found, False)
        return iter(found)

    def _node_count(self):
        """Nodes in the tree, the root included: for pruning tests and memory metrics."""
        cdef Py_ssize_t count = 0
        cdef list stack = [self._root]
        cdef _TopicNode node
        while PyList_GET_SIZE(stack):
            node = stack.pop()
            count += 1
            if node.children is not None:
                stack.extend(node.children.values())
        return count
