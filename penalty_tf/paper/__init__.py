"""The paper's machinery, kept apart from the library: nothing in `penalty_tf` outside this
subpackage imports it (tests/test_layout.py checks the import graph).

* `experiment`: the run plumbing of the experiment scripts (common flags, seeds, result.json,
  atomic writes, progress, the CLI error type);
* `published`: the numbers the paper publishes, one registry;
* `report`: the paper's tables over a folder of result.json files;
* `reproduce`: one command per published row;
* `evidence`: the records in ``results/`` behind every number of the READMEs.
"""
