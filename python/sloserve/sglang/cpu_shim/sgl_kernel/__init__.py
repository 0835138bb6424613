"""Placeholder for ``sgl_kernel`` on a CPU without its native build (none is on the registry).

SGLang 0.5.23 imports these eight names at module level on its CPU path, but calls none of them
in plain serving (they back CPU speculative decoding and AMX KV copies). Each raises
``NotImplementedError`` if it is ever called. ``convert_weight_packed`` is deliberately absent:
SGLang checks for it to switch to AMX kernels, which this placeholder cannot run.
"""

PLACEHOLDER_NAMES = (
    "copy_all_layer_kv_cache_cpu",
    "assign_req_to_token_pool_cpu",
    "assign_extend_cache_locs_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "build_tree_kernel_efficient_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "verify_tree_greedy_cpu",
)
SLOSERVE_PLACEHOLDER = True


def _placeholder(name):
    def call(*_args, **_kwargs):
        raise NotImplementedError(f"sgl_kernel.{name} has no CPU build here (sloserve CPU placeholder)")

    call.__name__ = name
    return call


for _name in PLACEHOLDER_NAMES:
    globals()[_name] = _placeholder(_name)
del _name
