"""The fake Twilio's TwiML player: parses each document and follows it verb by verb as Twilio
does (``<Say>``, ``<Play>``, ``<Pause>``, ``<Gather>`` answered with the callee's next line,
``<Redirect>``, ``<Hangup/>``, ``<Reject>``, ``<Connect><Stream>`` run by ``stream``), fetching
the next document from the daemon, until the call ends; a REST update replaces the document
being played.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from urllib.parse import urljoin

import trio

from .stream import MediaStreams
from .values import HANGUP, SPEAK_S_PER_CHAR, Dtmf, FakeCall, _Doc, _Ending


class TwimlPlayer(MediaStreams):
    """Follows TwiML for a call until it ends."""

    async def _follow(self, call: FakeCall, step: _Doc | _Ending) -> None:
        """Run documents until the call ends; a REST update replaces the running one."""
        documents = 0
        while not call.terminal:
            if call._pending is not None:
                step, call._pending = call._pending, None
            if not isinstance(step, _Doc):
                self._close(call, step)
                return
            documents += 1
            if documents > self.max_documents_per_call:
                call.errors.append("FakeTwilio: too many documents (a redirect loop?)")
                self._end(call, "completed", by="error")
                return
            with trio.CancelScope() as scope:
                call._scope = scope
                step = await self._execute(call, step)
            call._scope = None
            if scope.cancelled_caught and call._pending is None and not call.terminal:
                step = "error"  # cancelled for no reason we know: end rather than guess

    def _close(self, call: FakeCall, ending: _Ending) -> None:
        if ending == "reject" or ending == "reject-busy":
            if call.answered:
                self._end(call, "completed", by="twiml")
            else:
                call.rejected = "busy" if ending == "reject-busy" else "rejected"
                self._end(call, "busy" if ending == "reject-busy" else "no-answer", by="twiml")
        elif ending == "error":
            self._end(call, "completed" if call.answered else "failed", by="error")
        elif ending != "gone":
            self._end(call, "completed", by="twiml")


    def _parse(self, call: FakeCall, text: str, url: str | None) -> _Doc | _Ending:
        call.documents.append(text)
        self._notify()
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            call.errors.append(f"12100: Document parse failure ({exc})")
            return "error"
        if root.tag != "Response":
            call.errors.append(f"12100: root element is <{root.tag}>, not <Response>")
            return "error"
        return _Doc(url, list(root))

    async def _request(self, call: FakeCall, kind: str, url: str, method: str,
                       extra: Sequence[tuple[str, str]] = ()) -> _Doc | _Ending:
        """Ask the daemon for TwiML (a fetch, a Gather action, a Redirect)."""
        delivery = await self._deliver(call.sid, kind, url,
                                       [*self._call_params(call), *extra], method)
        if not delivery.ok:
            what = delivery.error or f"HTTP {delivery.status}"
            call.errors.append(f"11200: HTTP retrieval failure ({what}) for {url}")
            return "error"
        return self._parse(call, delivery.body.decode("utf-8", "replace"), url)

    def _answer_inbound(self, call: FakeCall) -> None:
        if call.direction == "inbound" and not call.answered:
            self._set_status(call, "in-progress")  # a number's callback wants only the end

    async def _execute(self, call: FakeCall, doc: _Doc) -> _Doc | _Ending:
        verbs = doc.verbs
        for index, verb in enumerate(verbs):
            following = verbs[index + 1].tag if index + 1 < len(verbs) else None
            if verb.tag != "Reject":
                self._answer_inbound(call)
            if verb.tag == "Say":
                await self._say(call, verb)
            elif verb.tag == "Play":
                call.played.append((verb.text or "").strip())
            elif verb.tag == "Pause":
                await self._wait(_number(verb.get("length"), 1.0), idle=following == "Redirect")
            elif verb.tag == "Gather":
                result = await self._gather(call, verb, doc)
                if result is not None:
                    return result
            elif verb.tag == "Redirect":
                target = urljoin(doc.url or "", (verb.text or "").strip())
                return await self._request(call, "redirect", target, verb.get("method", "POST"))
            elif verb.tag == "Hangup":
                return "hangup"
            elif verb.tag == "Reject":
                return "reject-busy" if verb.get("reason") == "busy" else "reject"
            elif verb.tag == "Connect":
                action = verb.get("action")
                if await self._connect(call, verb) and action:  # Twilio asks what comes next
                    return await self._request(call, "connect", urljoin(doc.url or "", action),
                                               verb.get("method", "POST"))
            else:
                call.unsupported.append(verb.tag)
        return "end"

    async def _say(self, call: FakeCall, verb: ET.Element) -> None:
        text = verb.text or ""
        call.said.append(text)
        self._notify()
        await self._wait(len(text) * SPEAK_S_PER_CHAR)

    async def _gather(self, call: FakeCall, verb: ET.Element, doc: _Doc) -> _Doc | _Ending | None:
        for child in verb:
            if child.tag == "Say":
                await self._say(call, child)
            elif child.tag == "Play":
                call.played.append((child.text or "").strip())
            elif child.tag == "Pause":
                await self._wait(_number(child.get("length"), 1.0))
        action = urljoin(doc.url or "", verb.get("action") or doc.url or "")
        method = verb.get("method", "POST")
        line = call.next_line()
        if line is HANGUP:
            self._end(call, "completed", by="callee")
            return "gone"
        extra: list[tuple[str, str]] = []
        if isinstance(line, str):
            await self._wait(len(line) * SPEAK_S_PER_CHAR)
            extra = [("SpeechResult", line), ("Confidence", f"{call.callee.confidence:.7f}")]
        elif isinstance(line, Dtmf):
            extra = [("Digits", line.digits), ("FinishedOnKey", "")]
        else:  # silence, or nothing left to say
            await self._wait(_number(verb.get("timeout"), 5.0), idle=line is None)
            if verb.get("actionOnEmptyResult") != "true":
                return None  # Twilio goes on with the next verb
        result = await self._request(call, "gather", action, method, extra)
        if isinstance(line, str | Dtmf) and result != "error":
            call.replies.append(line if isinstance(line, str) else line.digits)
            self._notify()
        return result


def _number(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default
