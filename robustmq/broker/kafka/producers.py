"""Idempotent producers (KIP-98 without transactions): InitProducerId and the sequence
checks that make a retried batch land once.

Per producer id and partition the last five batches' sequence ranges are remembered, as
Kafka does: a batch repeating one of them is a retry and is answered with the offset it
got the first time without being stored again; a gap in the sequence is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch with INVALID_PRODUCER_EPOCH. This state is in
memory: after a restart the first batch of a producer is accepted whatever its sequence.
Transactional ids are refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED (transactions are
not offered yet).
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from robustmq._core.kafka_codec import BatchHeader, RequestHeader
from robustmq.errors import (
    KafkaInvalidProducerEpoch,
    KafkaInvalidRequest,
    KafkaOutOfOrderSequenceNumber,
    KafkaTransactionalIdAuthorizationFailed,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection

_RECENT = 5  # Kafka's ProducerStateEntry.NumBatchMetadataEntriesToRetain
_SEQ_MOD = 2**31  # sequences are int32 and wrap to 0


class _Appended(NamedTuple):
    epoch: int
    first_seq: int
    last_seq: int
    base_offset: int


class ProducerStates:
    def __init__(self) -> None:
        # Ids from the clock in microseconds, so a restarted broker does not hand out an id
        # some producer still holds.
        self._next_id = time.time_ns() // 1000
        self._recent: dict[tuple[int, str], collections.deque[_Appended]] = {}

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def duplicate_of(self, shard: str, h: BatchHeader) -> int | None:
        """The base offset a retried batch got before; None for a batch to append. Raises
        for a sequence gap or a fenced epoch."""
        recent = self._recent.get((h.producer_id, shard))
        if h.producer_id < 0 or not recent:
            return None
        last = recent[-1]
        if h.producer_epoch < last.epoch:
            raise KafkaInvalidProducerEpoch(f"epoch {h.producer_epoch} < {last.epoch}")
        if h.producer_epoch > last.epoch:
            if h.base_sequence != 0:
                raise KafkaOutOfOrderSequenceNumber(
                    f"new epoch {h.producer_epoch} starts at sequence {h.base_sequence}, not 0"
                )
            return None
        for entry in recent:
            if entry.first_seq == h.base_sequence:
                return entry.base_offset
        if h.base_sequence != (last.last_seq + 1) % _SEQ_MOD:
            raise KafkaOutOfOrderSequenceNumber(
                f"sequence {h.base_sequence}, expected {(last.last_seq + 1) % _SEQ_MOD}"
            )
        return None

    def appended(self, shard: str, h: BatchHeader, base_offset: int) -> None:
        if h.producer_id < 0:
            return
        recent = self._recent.setdefault((h.producer_id, shard), collections.deque(maxlen=_RECENT))
        if recent and recent[-1].epoch != h.producer_epoch:
            recent.clear()
        last_seq = (h.base_sequence + h.last_offset_delta) % _SEQ_MOD
        recent.append(_Appended(h.producer_epoch, h.base_sequence, last_seq, base_offset))

    def forget_shard(self, shard: str) -> None:
        for key in [k for k in self._recent if k[1] == shard]:
            del self._recent[key]


async def handle_init_producer_id(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    if req["transactional_id"] is not None:
        # Fatal for the client (a retriable code would have it retry until its timeout).
        return {"error_code": KafkaTransactionalIdAuthorizationFailed.code}
    if (req.get("producer_id", -1) < 0) != (req.get("producer_epoch", -1) < 0):
        return {"error_code": KafkaInvalidRequest("producer id and epoch: both or neither").code}
    # KIP-360 lets a producer name its current id and epoch; without a transactional id,
    # Kafka answers with a new id at epoch 0, as here. Bumping the named id instead would
    # let any client fence another producer's id, and overflows the int16 epoch at 32767.
    return {"error_code": 0, "producer_id": broker.producers.new_id(), "producer_epoch": 0}
