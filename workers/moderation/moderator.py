"""The moderator: applies one prompt or chunk event to its conversation.

Order of effects for every event, which is what makes at-least-once delivery safe:

1. read the turn state (cached per conversation, else from the store);
2. score with the guard backend and decide with the policy (debounce carried across chunks);
3. publish the verdict and, when the message is cut off, the one ``ControlEvent``;
4. commit the new state atomically (``open_turn`` / ``apply_chunk``: fenced, in-order, idempotent);
5. acknowledge the Kafka record.

A run of consecutive chunks (handed over by the lane) goes through these steps once as a whole:
one score for all its tokens, every chunk's verdict published, one commit of ``seq..last_seq``,
then every record acknowledged.

A crash between 3 and 4 re-runs the event on redelivery: the verdict and cut-off get the same ids
(derived from conversation, message, stage and seq), so consumers see no new effective verdict.
Anything that cannot be applied becomes a dead letter with a precise reason and is acknowledged;
no exception escapes ``handle``.

A message that outgrows the guard's context (its model's ``max_position_embeddings``) cannot be
judged any further: the prompt or chunk that would pass the limit gets an unsafe ``guard_error``
verdict and the message a cut-off whose reason names the limit, whatever ``guard.on_error`` says
(flagging would leave every later chunk unjudged), and its tokens never enter the token log, so
the log stays within the context. The chunks of a run before it are judged one by one, as if
they had arrived alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from topics.events import (
    Action,
    ControlEvent,
    PromptEvent,
    Risk,
    RiskProbs,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
    VerdictStatus,
)
from workers.backends.base import GuardBackend, PromptRequest, ResponseRequest
from workers.engine.debounce import DebounceCarry, Policy, decide_chunk, decide_prompt
from workers.engine.jobs import SequenceTooLong
from workers.engine.template import PromptFormatError
from workers.engine.text import IncrementalTokenizer
from workers.metrics import NullSensor, Sensor
from workers.moderation import ids
from workers.moderation.delivery import Delivery, dead_letter
from workers.moderation.lag import LagMonitor
from workers.moderation.lanes import Outcome, Work
from workers.moderation.sink import Effect, EffectSink
from workers.state.base import ApplyStatus, ChunkUpdate, ConversationStore, StoreUnavailable, TurnState

logger = logging.getLogger(__name__)

POLICY_VERSION = 1
STORE_RETRY_FIRST_S = 0.1
STORE_RETRY_CAP_S = 5.0
"""Backoff of an event waiting for the state store: doubling from the first delay up to the cap."""


class StoreOutage:
    """Whether the state store is reachable, as the events see it; logs the outage once and its end."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0  # in the current outage
        self.total_failures = 0  # since start

    @property
    def healthy(self) -> bool:
        return self.since is None

    def failed(self, exc: StoreUnavailable) -> None:
        self.failures += 1
        self.total_failures += 1
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("state store unreachable (%s): holding events and retrying", exc)

    def recovered(self) -> None:
        if self.since is not None:
            logger.warning(
                "state store reachable again after %.1f s (%s failed attempts)",
                time.monotonic() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0


@dataclass(frozen=True, slots=True)
class ModeratorConfig:
    worker_id: str
    default_policy: Policy
    dlq_payload_bytes: int
    state_cache_size: int = 100_000
    lag_warn_s: float = 0.5
    on_error: Action = Action.CUTOFF
    """What a guard failure on an event does (``guard.on_error``): CUTOFF or FLAG."""
    on_state_loss: Action = Action.CUTOFF
    """What a chunk without context gets (``guard.on_state_loss``): CUTOFF or FLAG."""


class Moderator:
    """Implements the lanes' ``Handler``: a conversation's events in order, a run of chunks at once."""

    def __init__(
        self,
        backend: GuardBackend,
        store: ConversationStore,
        sink: EffectSink,
        config: ModeratorConfig,
        sensor: Sensor | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._sink = sink
        self._cfg = config
        self._sensor: Sensor = sensor or NullSensor()
        self._states: OrderedDict[str, TurnState] = OrderedDict()
        self._epochs: dict[int, int] = {}
        self.lag = LagMonitor(warn_s=config.lag_warn_s)
        self.store_outage = StoreOutage()

    @property
    def worker_id(self) -> str:
        return self._cfg.worker_id

    # -- ownership ----------------------------------------------------------------------------

    async def on_assigned(self, partitions: Sequence[int]) -> None:
        """New owner epochs for ``partitions``; cached states are re-read from the store."""
        for p in partitions:
            self._epochs[p] = await self._store.bump_epoch(p)
        self._states.clear()

    def _epoch(self, partition: int) -> int:
        return self._epochs.get(partition, 0)

    # -- Handler protocol -------------------------------------------------------------------------

    async def handle(self, run: Sequence[Work]) -> list[Outcome]:
        """Apply ``run`` (a prompt, or consecutive chunks of one message), or a prefix of it; while
        the state store is unreachable, keep it, wait and try again.

        The events are neither acknowledged nor dead-lettered meanwhile: their lane (and with the
        in-flight bound, the consumer) waits, so no offset past them is committed. A retry may
        publish the same verdicts again, under the same ids, which consumers drop.
        """
        delay = STORE_RETRY_FIRST_S
        while True:
            try:
                outcomes = await self._handle_once(run)
            except StoreUnavailable as exc:
                self._states.pop(run[0].conversation_id, None)
                self.store_outage.failed(exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, STORE_RETRY_CAP_S)
                continue
            self.store_outage.recovered()
            return outcomes

    async def _handle_once(self, run: Sequence[Work]) -> list[Outcome]:
        work = run[0]
        try:
            if isinstance(work.event, PromptEvent):
                return [await self._prompt(work, work.event)]
            return await self._chunks(run)
        except StoreUnavailable:
            raise
        except Exception as exc:  # one bad event must not stop the worker
            logger.exception(
                "failed to moderate %s[%s]@%s (%d records)",
                work.delivery.topic,
                work.delivery.partition,
                work.delivery.offset,
                len(run),
                extra=work.delivery.log_extra(work.conversation_id),
            )
            self._states.pop(work.conversation_id, None)
            for each in run:
                await self._reject(each, "processing_error", f"{type(exc).__name__}: {exc}")
            return [Outcome.DONE] * len(run)

    def _log_guard_failure(self, work: Work, exc: Exception) -> None:
        """Log a guard failure on ``work``; the caller publishes its explicit outcome."""
        if isinstance(exc, SequenceTooLong):  # a limit of the model, not a fault: no traceback
            logger.warning(
                "%s[%s]@%s: %s; cutting the message off",
                work.delivery.topic,
                work.delivery.partition,
                work.delivery.offset,
                _failure_reason(exc),
                extra=work.delivery.log_extra(work.conversation_id),
            )
            return
        logger.error(
            "the guard failed on %s[%s]@%s (%s: %s); publishing status guard_error with action %s",
            work.delivery.topic,
            work.delivery.partition,
            work.delivery.offset,
            type(exc).__name__,
            exc,
            self._cfg.on_error.value,
            exc_info=exc,
            extra=work.delivery.log_extra(work.conversation_id),
        )

    async def expire(self, work: Work, outcome: Outcome, why: str) -> None:
        if outcome is Outcome.WAIT_PROMPT:
            await self._context_lost(work, why)
            return
        else:
            assert isinstance(work.event, TokenChunkEvent)
            state = self._states.get(work.conversation_id)
            expected = state.next_seq if state else "?"
            reason, detail = "seq_gap", f"seq {work.event.seq} arrived but seq {expected} never did ({why})"
        await self._reject(work, reason, detail)

    async def _context_lost(self, work: Work, why: str) -> None:
        """A chunk with nothing to judge it in: an explicit verdict (status ``context_lost``) with the
        configured action, and a cut-off the producer learns of; never silence.

        Every such chunk of the message gets its own verdict; the cut-off has the message's one
        control id, so a repeat of it is dropped by consumers.
        """
        event = work.event
        assert isinstance(event, TokenChunkEvent)
        policy = self._cfg.default_policy
        action = self._cfg.on_state_loss
        logger.warning(
            "no context for %s/%s seq %s (%s): its prompt never arrived or its state was lost; %s",
            event.conversation_id,
            event.message_id,
            event.seq,
            why,
            action.value,
            extra=work.delivery.log_extra(event.conversation_id, event.message_id),
        )
        verdict = self._verdict(
            event,
            work.delivery,
            stage=Stage.RESPONSE,
            seq=event.seq,
            span=(0, 0),
            risk=Risk.UNSAFE,
            action=action,
            category=None,
            probs=None,
            tier=self._backend.info.tier,
            policy=policy,
            status=VerdictStatus.CONTEXT_LOST,
        )
        await self._publish_all([(verdict, work)])
        await self._cut_off_without_context(
            event,
            f"no context to judge this message in ({why}): its prompt never reached the guard, or the "
            "conversation's state was lost",
        )
        await work.ack()

    async def _cut_off_without_context(self, event: TokenChunkEvent, reason: str) -> None:
        """The message's cut-off for lost context, when ``guard.on_state_loss`` says cutoff."""
        if self._cfg.on_state_loss is Action.CUTOFF:
            control = self._control(
                event, Stage.RESPONSE, event.seq, None, Risk.UNSAFE, None, self._cfg.default_policy, reason=reason
            )
            await self._publish_all([(control, None)])

    # -- prompts ----------------------------------------------------------------------------------

    async def _prompt(self, work: Work, event: PromptEvent) -> Outcome:
        policy = self._policy(event.policy)
        if policy is None:
            await self._reject(work, "invalid_value", f"unknown policy {event.policy!r}", field="policy")
            return Outcome.DONE
        state = await self._state(event.conversation_id)
        if state is not None and state.message_id == event.message_id:
            if work.delivery.offset == state.prompt_offset:
                return await self._redelivered(work)
            await self._reject(work, "duplicate_prompt", "this message's prompt was already moderated")
            return Outcome.DONE
        fmt = self._backend.chat_format
        try:
            if event.token_ids is not None:
                fmt.check_prompt_ids(event.token_ids)
                prompt_ids = list(event.token_ids)
                text = str(fmt.tokenizer.decode(prompt_ids))
            else:
                prompt_ids = fmt.render_prompt(event.messages)
                text = _last_user_text(event)
        except PromptFormatError as exc:
            await self._reject(work, "invalid_value", str(exc), field="token_ids")
            return Outcome.DONE

        key = ids.turn_key(event.conversation_id, event.message_id)
        try:
            scores = await self._backend.score_prompt(PromptRequest(key=key, token_ids=prompt_ids, text=text))
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001  # the guard failed: an explicit outcome (logged there), never a pass
            self._log_guard_failure(work, exc)
            failure: Exception | None = exc
            self._backend.release(key)
            action = Action.CUTOFF if isinstance(exc, SequenceTooLong) else self._cfg.on_error
            risk, category, probs, tier = Risk.UNSAFE, None, None, self._backend.info.tier
        else:
            failure = None
            decision = decide_prompt(scores.risk, policy)
            risk, action, probs, tier = decision.risk, decision.action, scores.risk, scores.tier
            category = self._backend.info.query_categories[scores.category] if risk is not Risk.SAFE else None
        verdict = self._verdict(
            event,
            work.delivery,
            stage=Stage.PROMPT,
            seq=None,
            span=(0, 0),
            risk=risk,
            action=action,
            category=category,
            probs=probs,
            tier=tier,
            policy=policy,
            status=VerdictStatus.GUARD_ERROR if failure else VerdictStatus.MODERATED,
        )
        effects: list[tuple[Effect, Work | None]] = [(verdict, work)]
        cutoff = ""
        if action is Action.CUTOFF:
            reason = _failure_reason(failure) if failure else None
            control = self._control(event, Stage.PROMPT, None, None, risk, category, policy, reason=reason)
            effects.append((control, None))
            cutoff = json.dumps({"stage": "prompt", "risk": risk.value, "category": category})
            self._backend.release(key)
        await self._publish_all(effects)

        new = TurnState(
            conversation_id=event.conversation_id,
            message_id=event.message_id,
            epoch=self._epoch(work.delivery.partition),
            policy=policy.value,
            prompt_len=len(prompt_ids),
            log_len=len(prompt_ids),
            cutoff=cutoff,
            prompt_risk=risk.value,
            prompt_action=action.value,
            prompt_offset=work.delivery.offset,
        )
        status = await self._store.open_turn(new, prompt_ids)
        (outcome,) = await self._committed([work], status, new)
        return outcome

    # -- chunks -----------------------------------------------------------------------------------

    async def _chunks(self, run: Sequence[Work]) -> list[Outcome]:
        """Apply a run of consecutive chunks of one message (the lane's contract), or its first chunk
        alone when that one cannot start a live run."""
        work = run[0]
        first = work.event
        assert isinstance(first, TokenChunkEvent)
        state = await self._state(first.conversation_id)
        if state is None or state.message_id != first.message_id:
            # The prompt may still be on its way (prompts and tokens are separate topics); the rest
            # of the run belongs to the same message and waits with it.
            return [Outcome.WAIT_PROMPT] * len(run)
        if first.seq < state.next_seq:
            if work.delivery.offset <= state.chunk_offset:
                return [await self._redelivered(work)]
            await self._reject(work, "duplicate_seq", f"seq {first.seq} was already applied")
            return [Outcome.DONE]
        if first.seq > state.next_seq:
            return [Outcome.WAIT_SEQ] * len(run)
        if state.cutoff or state.final:
            return [await self._after_end(work, first, state)]
        fit = await self._in_vocabulary(run)
        if not fit:
            return [Outcome.DONE]
        return await self._score_run(fit, state)

    async def _in_vocabulary(self, run: Sequence[Work]) -> Sequence[Work]:
        """The chunks of ``run`` before the first one carrying a token id outside the guard's
        vocabulary; when that is the first, it is dead-lettered and nothing is returned.

        Such an id has no embedding (or none the tokenizer would ever produce): scored, it would
        fail the engine's whole forward, and with it every other conversation batched with it.
        """
        fmt = self._backend.chat_format
        for i, work in enumerate(run):
            event = work.event
            assert isinstance(event, TokenChunkEvent)
            try:
                fmt.check_vocabulary(event.token_ids or ())
            except PromptFormatError as exc:
                if i == 0:
                    await self._reject(work, "invalid_value", str(exc), field="token_ids")
                return run[:i]
        return run

    async def _score_run(self, run: Sequence[Work], state: TurnState) -> list[Outcome]:
        """Judge chunks ``state.next_seq``, ``+ 1``, ... as one engine request and one store commit.

        Every chunk gets its own verdict, decided chunk by chunk with the debounce carried between
        them, exactly as if they had arrived one at a time; a chunk after one that cut the message
        off gets an ``after_cutoff`` verdict and adds nothing to the log, as it would have later.
        """
        event0 = run[0].event
        assert isinstance(event0, TokenChunkEvent)
        fmt = self._backend.chat_format
        tokenizer = IncrementalTokenizer.from_state(fmt, state.tokenizer_state)
        pieces: list[_Piece] = []
        log_len = state.log_len
        for work in run:
            event = work.event
            assert isinstance(event, TokenChunkEvent)
            if event.text is not None:
                content = tokenizer.feed(event.text)
            else:
                # Token ids after text deltas: flush the held-back text first so nothing is lost.
                content = tokenizer.finish() + list(event.token_ids or ())
            if event.final:
                content += tokenizer.finish()
            judged = content + (list(fmt.response_suffix) if event.final else [])
            # The scaffold goes into the log with the first judged tokens, so the engine's cache and
            # the log never disagree about it.
            prefix = list(fmt.response_prefix) if judged and log_len == state.prompt_len else []
            pieces.append(_Piece(event, work, len(prefix), prefix + judged, tokenizer.state_json()))
            log_len += len(prefix) + len(judged)

        policy = Policy(state.policy)
        carry = DebounceCarry.from_dict(json.loads(state.carry)) if state.carry else DebounceCarry()
        key = ids.turn_key(event0.conversation_id, event0.message_id)
        all_ids = [t for piece in pieces for t in piece.ids]
        risk_all = np.zeros((0, 3), dtype=np.float32)
        categories_all = np.zeros((0,), dtype=np.int64)
        failure: Exception | None = None
        if all_ids:
            try:
                scores = await self._backend.score_response(
                    ResponseRequest(
                        key=key,
                        offset=state.log_len,
                        new_ids=all_ids,
                        history=lambda: self._store.read_log(event0.conversation_id, state.log_len),
                    )
                )
            except StoreUnavailable:
                raise  # the history came from the store: a transport fault, retried (handle)
            except SequenceTooLong as exc:
                if len(run) > 1:
                    # Nothing was scored or cached: judge the chunks that fit one by one, until the
                    # one that does not is alone.
                    return await self._score_run(run[:1], state)
                return [await self._beyond_context(run[0], event0, state, exc)]
            except Exception as exc:  # noqa: BLE001  # the guard failed: an explicit outcome (logged there), never a pass
                self._log_guard_failure(run[0], exc)
                failure = exc
                self._backend.release(key)  # whatever it cached for this message is suspect
            else:
                risk_all, categories_all = scores.risk, scores.category

        effects: list[tuple[Effect, Work | None]] = []
        names = self._backend.info.response_categories
        start = state.response_tokens
        offset = 0
        logged: list[int] = []
        cutoff = ""
        live = 0  # chunks judged (the rest of the run comes after a cut-off)
        for piece in pieces:
            event, n_judged = piece.event, len(piece.ids) - piece.prefix
            if failure is None:
                begin, end = offset + piece.prefix, offset + len(piece.ids)
                carry, decision = decide_chunk(
                    carry, risk_all[begin:end], categories_all[begin:end], start=start, policy=policy
                )
                category = names[decision.category] if decision.category is not None else None
                risk, action, probs, trigger = decision.risk, decision.action, decision.probs, decision.trigger_index
            else:
                # The tokens go into the log as usual (a later chunk is scored in their context,
                # rebuilt from the log); the debounce skips them: they have no label to pair with the
                # next token.
                carry = replace(carry, next_index=start + n_judged, last=None)
                risk, action, category, probs, trigger = Risk.UNSAFE, self._cfg.on_error, None, None, None
            offset += len(piece.ids)
            verdict = self._verdict(
                event,
                piece.work.delivery,
                stage=Stage.RESPONSE,
                seq=event.seq,
                span=(start, start + n_judged),
                risk=risk,
                action=action,
                category=category,
                probs=probs,
                tier=self._backend.info.tier,
                policy=policy,
                flagged=trigger,
                status=VerdictStatus.GUARD_ERROR if failure else VerdictStatus.MODERATED,
            )
            effects.append((verdict, piece.work))
            logged += piece.ids
            start += n_judged
            live += 1
            if action is Action.CUTOFF:
                index = trigger if trigger is not None else verdict.token_start
                reason = _failure_reason(failure) if failure else None
                control = self._control(event, Stage.RESPONSE, event.seq, index, risk, category, policy, reason=reason)
                effects.append((control, None))
                cutoff = json.dumps({"seq": event.seq, "token_index": index, "risk": risk.value})
                break
        effects.extend(
            (self._after_cutoff_verdict(piece.event, piece.work, policy, cutoff, start), piece.work)
            for piece in pieces[live:]
        )
        last = run[-1].event
        assert isinstance(last, TokenChunkEvent)
        if cutoff or last.final:
            self._backend.release(key)
        await self._publish_all(effects)

        update = ChunkUpdate(
            response_tokens=start,
            tokenizer_state=pieces[live - 1].tokenizer_state,
            carry=json.dumps(carry.to_dict()),
            cutoff=cutoff,
            final=last.final,
            chunk_offset=_newest_offset(state, run),
        )
        status = await self._store.apply_chunk(
            event0.conversation_id,
            event0.message_id,
            epoch=self._epoch(run[0].delivery.partition),
            seq=event0.seq,
            last_seq=last.seq,
            new_ids=logged,
            update=update,
        )
        new = replace(
            state,
            epoch=self._epoch(run[0].delivery.partition),
            next_seq=last.seq + 1,
            log_len=state.log_len + len(logged),
            response_tokens=update.response_tokens,
            tokenizer_state=update.tokenizer_state,
            carry=update.carry,
            cutoff=update.cutoff,
            final=update.final,
            chunk_offset=update.chunk_offset,
        )
        return await self._committed(run, status, new)

    async def _beyond_context(
        self, work: Work, event: TokenChunkEvent, state: TurnState, exc: SequenceTooLong
    ) -> Outcome:
        """A chunk that would take its message past the guard's context: an unsafe ``guard_error``
        verdict and the message's cut-off (see the module docstring); its tokens are not logged."""
        self._log_guard_failure(work, exc)
        policy, at = Policy(state.policy), state.response_tokens
        self._backend.release(ids.turn_key(event.conversation_id, event.message_id))
        verdict = self._verdict(
            event,
            work.delivery,
            stage=Stage.RESPONSE,
            seq=event.seq,
            span=(at, at),
            risk=Risk.UNSAFE,
            action=Action.CUTOFF,
            category=None,
            probs=None,
            tier=self._backend.info.tier,
            policy=policy,
            status=VerdictStatus.GUARD_ERROR,
        )
        control = self._control(
            event, Stage.RESPONSE, event.seq, at, Risk.UNSAFE, None, policy, reason=_failure_reason(exc)
        )
        await self._publish_all([(verdict, work), (control, None)])
        cutoff = json.dumps({"seq": event.seq, "token_index": at, "risk": Risk.UNSAFE.value})
        update = ChunkUpdate(
            response_tokens=at,
            tokenizer_state=state.tokenizer_state,
            carry=state.carry,
            cutoff=cutoff,
            final=event.final,
            chunk_offset=_newest_offset(state, [work]),
        )
        epoch = self._epoch(work.delivery.partition)
        status = await self._store.apply_chunk(
            event.conversation_id, event.message_id, epoch=epoch, seq=event.seq, new_ids=[], update=update
        )
        new = replace(
            state,
            epoch=epoch,
            next_seq=event.seq + 1,
            cutoff=cutoff,
            final=event.final,
            chunk_offset=update.chunk_offset,
        )
        (outcome,) = await self._committed([work], status, new)
        return outcome

    def _after_cutoff_verdict(
        self, event: TokenChunkEvent, work: Work, policy: Policy, cutoff: str, at: int
    ) -> VerdictEvent:
        """The verdict of a chunk that arrived after its message was cut off."""
        cut = json.loads(cutoff)
        return self._verdict(
            event,
            work.delivery,
            stage=Stage.RESPONSE,
            seq=event.seq,
            span=(at, at),
            risk=Risk(cut["risk"]),
            action=Action.CUTOFF,
            category=cut.get("category"),
            probs=None,
            tier=self._backend.info.tier,
            policy=policy,
            status=VerdictStatus.AFTER_CUTOFF,
        )

    async def _after_end(self, work: Work, event: TokenChunkEvent, state: TurnState) -> Outcome:
        """A chunk after the message was cut off (or finished): acknowledged, not re-moderated."""
        if not state.cutoff:
            await self._reject(work, "after_final", f"seq {event.seq} arrived after the final chunk")
            return Outcome.DONE
        verdict = self._after_cutoff_verdict(event, work, Policy(state.policy), state.cutoff, state.response_tokens)
        await self._publish_all([(verdict, work)])
        update = ChunkUpdate(
            response_tokens=state.response_tokens,
            tokenizer_state=state.tokenizer_state,
            carry=state.carry,
            cutoff=state.cutoff,
            final=state.final or event.final,
            chunk_offset=_newest_offset(state, [work]),
        )
        result = await self._store.apply_chunk(
            event.conversation_id,
            event.message_id,
            epoch=self._epoch(work.delivery.partition),
            seq=event.seq,
            new_ids=[],
            update=update,
        )
        new = replace(
            state,
            next_seq=event.seq + 1,
            final=update.final,
            epoch=self._epoch(work.delivery.partition),
            chunk_offset=update.chunk_offset,
        )
        (outcome,) = await self._committed([work], result, new)
        return outcome

    # -- shared -----------------------------------------------------------------------------------

    async def _committed(self, run: Sequence[Work], status: ApplyStatus, new: TurnState) -> list[Outcome]:
        """Acknowledge ``run`` (its effects are published) after the store answered its commit."""
        work = run[0]
        if status is ApplyStatus.OK:
            self._remember(new)
            for each in run:
                await each.ack()
            return [Outcome.APPLIED] * len(run)
        # The store disagrees with our cached view (another owner, an expiry): trust the store.
        self._states.pop(work.conversation_id, None)
        if status is ApplyStatus.DUPLICATE and await self._already_applied(run):
            # This very step is in the store: an earlier attempt's write whose reply was lost in
            # a connection fault (the client retried it), or another worker's for the same records.
            for each in run:
                await each.ack()
            return [Outcome.APPLIED] * len(run)
        done = [Outcome.DONE] * len(run)
        if status is ApplyStatus.MISSING and isinstance(work.event, TokenChunkEvent):
            # The turn vanished from the store under us (Redis restarted empty, an eviction, an
            # expiry): these chunks have their verdicts, but the rest of the message has no context.
            await self._state_lost(run, work.event)
            return done
        if status is ApplyStatus.FENCED:
            logger.warning(
                "conversation %s moved to a newer owner; leaving %s[%s]@%s (%d records) to it",
                work.conversation_id,
                work.delivery.topic,
                work.delivery.partition,
                work.delivery.offset,
                len(run),
                extra=work.delivery.log_extra(work.conversation_id),
            )
            for each in run:
                await each.ack()
            return done
        for each in run:
            await self._reject(each, f"state_{status.value}", f"state store refused the update: {status.value}")
        return done

    async def _already_applied(self, run: Sequence[Work]) -> bool:
        """Whether the store's turn already holds ``run``'s records (see ``TurnState.chunk_offset``)."""
        work = run[0]
        state = await self._state(work.conversation_id)
        if state is None or state.message_id != work.event.message_id:
            return False
        if isinstance(work.event, PromptEvent):
            return state.prompt_offset == work.delivery.offset
        return state.chunk_offset >= max(each.delivery.offset for each in run)

    async def _redelivered(self, work: Work) -> Outcome:
        """A record this turn has already applied, seen again (a redelivery after a crash or a
        rebalance, or a retry after a store fault): its effects were published before the commit
        that recorded it, so it is only acknowledged."""
        logger.debug(
            "%s[%s]@%s was already applied; acknowledging it",
            work.delivery.topic,
            work.delivery.partition,
            work.delivery.offset,
            extra=work.delivery.log_extra(work.conversation_id),
        )
        await work.ack()
        return Outcome.DONE

    async def _state_lost(self, run: Sequence[Work], event: TokenChunkEvent) -> None:
        """The store lost this turn after ``event`` was judged: act on ``guard.on_state_loss`` now,
        rather than when the next chunk has waited for a prompt that will not come again."""
        logger.warning(
            "the state of %s/%s vanished from the store at seq %s; %s",
            event.conversation_id,
            event.message_id,
            event.seq,
            self._cfg.on_state_loss.value,
            extra=run[0].delivery.log_extra(event.conversation_id, event.message_id),
        )
        await self._cut_off_without_context(
            event, "the conversation's state was lost (the state store restarted empty, or evicted or expired it)"
        )
        for work in run:
            await work.ack()

    async def _publish_all(self, effects: Sequence[tuple[Effect, Work | None]]) -> None:
        """Publish ``effects`` in order (a verdict is paired with its event's work) and record the
        verdicts' latency and lag once the broker has acknowledged them all."""
        await self._sink.publish_many([effect for effect, _ in effects])
        now, wall = time.perf_counter(), time.time()
        for effect, work in effects:
            if isinstance(effect, ControlEvent):
                self._sensor.on_cutoff(effect.stage.value, effect.category)
            elif isinstance(effect, VerdictEvent) and work is not None:
                self._sensor.on_verdict(
                    effect.stage.value,
                    effect.risk.value,
                    effect.action.value,
                    now - work.delivery.received,
                    effect.tier,
                )
                if work.delivery.produced is not None:
                    lag = max(0.0, wall - work.delivery.produced)
                    self._sensor.on_lag(effect.stage.value, lag)
                    self.lag.observe(lag)

    async def _state(self, conversation_id: str) -> TurnState | None:
        state = self._states.get(conversation_id)
        if state is None:
            state = await self._store.load(conversation_id)
            if state is not None:
                self._remember(state)
        else:
            self._states.move_to_end(conversation_id)
        return state

    def _remember(self, state: TurnState) -> None:
        self._states[state.conversation_id] = state
        self._states.move_to_end(state.conversation_id)
        while len(self._states) > self._cfg.state_cache_size:
            self._states.popitem(last=False)

    def _policy(self, name: str | None) -> Policy | None:
        if name is None:
            return self._cfg.default_policy
        try:
            return Policy(name)
        except ValueError:
            return None

    async def _reject(self, work: Work, reason: str, detail: str, *, field: str | None = None) -> None:
        await self.reject_delivery(work.delivery, reason, detail, field=field, conversation_id=work.conversation_id)
        await work.ack()

    async def reject_delivery(
        self,
        delivery: Delivery,
        reason: str,
        detail: str,
        *,
        field: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Publish a dead letter for ``delivery`` (the caller acknowledges the record)."""
        logger.warning(
            "dead-lettering %s[%s]@%s: %s (%s)",
            delivery.topic,
            delivery.partition,
            delivery.offset,
            reason,
            detail,
            extra=delivery.log_extra(conversation_id),
        )
        await self._sink.publish(
            dead_letter(
                delivery,
                reason=reason,
                detail=detail,
                field=field,
                conversation_id=conversation_id,
                payload_limit=self._cfg.dlq_payload_bytes,
                worker_id=self._cfg.worker_id,
            )
        )

    def _verdict(
        self,
        event: PromptEvent | TokenChunkEvent,
        delivery: Delivery,
        *,
        stage: Stage,
        seq: int | None,
        span: tuple[int, int],
        risk: Risk,
        action: Action,
        category: str | None,
        probs: npt.NDArray[np.float32] | None,
        tier: str,
        policy: Policy,
        flagged: int | None = None,
        status: VerdictStatus = VerdictStatus.MODERATED,
    ) -> VerdictEvent:
        info = self._backend.info
        return VerdictEvent(
            event_id=ids.verdict_id(event.conversation_id, event.message_id, stage, seq),
            conversation_id=event.conversation_id,
            message_id=event.message_id,
            stage=stage,
            seq=seq,
            token_start=span[0],
            token_end=span[1],
            risk=risk,
            category=category,
            probs=_probs(probs),
            action=action,
            status=status,
            tier=tier,
            model_id=info.model_id,
            model_revision=info.revision,
            policy=policy.value,
            policy_version=POLICY_VERSION,
            worker_id=self._cfg.worker_id,
            latency_ms=round((time.perf_counter() - delivery.received) * 1000, 3),
            flagged_token=flagged,
        )

    def _control(
        self,
        event: PromptEvent | TokenChunkEvent,
        stage: Stage,
        seq: int | None,
        token_index: int | None,
        risk: Risk,
        category: str | None,
        policy: Policy,
        *,
        reason: str | None = None,
    ) -> ControlEvent:
        return ControlEvent(
            event_id=ids.control_id(event.conversation_id, event.message_id),
            conversation_id=event.conversation_id,
            message_id=event.message_id,
            stage=stage,
            seq=seq,
            token_index=token_index,
            risk=risk,
            category=category,
            policy=policy.value,
            reason=reason or f"{stage.value} judged {risk.value} under the {policy.value} policy",
        )


@dataclass(frozen=True, slots=True)
class _Piece:
    """One chunk of a run, tokenised: the ids it adds to the log (``prefix`` of them scaffold) and
    the tokenizer's state after it."""

    event: TokenChunkEvent
    work: Work
    prefix: int
    ids: list[int]
    tokenizer_state: str


def _newest_offset(state: TurnState, run: Sequence[Work]) -> int:
    """The turn's ``chunk_offset`` once ``run`` is applied: its records may be older than ones
    applied before them (a chunk parked ahead of a gap, applied when the gap closed)."""
    return max(state.chunk_offset, *(work.delivery.offset for work in run))


def _failure_reason(failure: Exception) -> str:
    if isinstance(failure, SequenceTooLong):
        return (
            f"the message outgrew the guard's context: {failure.tokens} tokens exceed the model's "
            f"{failure.limit} positions; the rest of it cannot be judged"
        )
    return f"the guard failed on this {type(failure).__name__}: {failure}"[:500]


def _last_user_text(event: PromptEvent) -> str:
    return next(m.content for m in reversed(event.messages) if m.role is Role.USER)


def _probs(probs: npt.NDArray[np.float32] | None) -> RiskProbs | None:
    if probs is None:
        return None
    safe, controversial, unsafe = (round(float(p), 5) for p in probs)
    return RiskProbs(safe=safe, controversial=controversial, unsafe=unsafe)
