"""Benchmarks of a serving EXO cluster: measuring client, load shapes, statistics, checkpoints, plots.

Modules (each states its contract in its docstring; definitions in README.md next to this file):
  client       BenchClient.send(ChatRequest) -> RequestRecord (SSE quirks, exact arrival stamps)
  load         run_rounds: N threads released together by a barrier, round after round
  stats        dist (percentiles with n), summarize (phase summary; aggregate = tokens / wall)
  prompts      PromptSizer: prompts of exactly a target token count (tokenizer, or corrected by server usage)
  tasks        prompts with checkable answers
  cases        profiles, cases_for(phase, profile), run_case(case, ctx) -> CaseOutcome
  checkpoints  atomic case JSON, reuse lookup across run folders, previous measurement
  heartbeat    progress lines every few requests and at least every 15 s
  reference    ratios to the model profile's reference figures, regression vs the previous run
  plots        PNGs of a run's checkpoints
  report       the ledger text of a case
  calibrate    the client's errors against a server with a known timing schedule
"""
