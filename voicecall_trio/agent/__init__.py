"""Built-in replies: an OpenAI-compatible Chat Completions client and what it needs.

Sans-IO cores (``sse``, ``chat``, ``sentences``, ``prompt``, ``waterfall``) and two thin trio
shells (``client``, ``builtin``). Who answers a call, and how the reply is spoken, is
``replies.py``'s job; this package only turns a call's transcript into reply text.
"""
