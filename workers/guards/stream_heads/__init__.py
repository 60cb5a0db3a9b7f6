"""streamwarden's own stream heads: Qwen3Guard-Stream-style heads trained on a frozen backbone.

``streamwarden train stream-heads`` trains the query and response head paths on top of a frozen
causal backbone (SmolLM2-135M-Instruct from its GGUF by default) and writes a checkpoint the
engine loads exactly like a released Qwen3Guard-Stream one. Modules, in the order the recipe uses
them (see ``docs/stream_heads.md`` for the labelling scheme and why):

- ``labels``: the released label maps and target indices the heads are trained with.
- ``responses``: response sets (prompt, answer, harmful or not) read with the split enforced.
- ``streams``: streamed examples built from them (whole answers, and a safe prefix spliced onto a
  harmful answer), with the character where each turns harmful.
- ``tokens``: those examples as token ids under a chat format, with per-token targets.
- ``user_data``: a user's own labelled prompts and responses (JSON lines), instead of the public sets.
- ``data``: the training data: prompts and responses from the training splits only (or a user's
  files), deduped against every evaluation set, with a validation part carved by group.
- ``features``: last hidden states, extracted once in length-sorted batches.
- ``heads``: the eight head modules and how one path is trained.
- ``validation``: metrics on the validation part (prompts, whole responses, cut-off delays).
- ``fitting``: both paths trained, each with the Safe-class weight that does best on validation.
- ``train``: the whole recipe behind the command.

Serving needs two of the pieces too, so they live with the backends: the frozen backbone
(``workers.backends.backbone``: GGUF, a transformers directory, or a guard checkpoint) and the
checkpoint formats (``workers.backends.stream_artifact``: the full checkpoint, the small shipped
artifact and its materialisation).

Importing this package (and ``responses``, ``streams``, ``tokens``, ``labels``, ``user_data``) loads
no torch.
"""
