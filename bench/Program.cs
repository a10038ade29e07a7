using System.CommandLine;
using System.Text.Json.Nodes;
using Retrieval.Bench;
using Retrieval.Trainer.Training;

OpenMpSettings.PreferPassiveWaiting();
var root = new RootCommand("Retrieval.Grpc benchmarks. With --json the last line of standard output is one JSON object.");
var json = new Option<bool>("--json") { Description = "End with one JSON line of results", Recursive = true };
root.Options.Add(json);

var dataDir = new Option<string?>("--data-dir") { Description = "MovieLens 100k folder (default: ../shared/data/ml-100k)" };
var threads = new Option<int>("--threads") { Description = "Threads for both sides (0 = all cores)", DefaultValueFactory = _ => 0 };
var repeats = new Option<int>("--repeats") { Description = "Runs per side; the median is reported", DefaultValueFactory = _ => 3 };
var noReference = new Option<bool>("--no-reference") { Description = "Skip the PyTorch reference" };
var train = new Command("train", "Training throughput and evaluation time against the PyTorch reference") { dataDir, threads, repeats, noReference };
train.SetAction(result => Report(TrainBenchmark.Run(result.GetValue(dataDir), result.GetValue(threads), Math.Max(1, result.GetValue(repeats)),
    result.GetValue(noReference)), result.GetValue(json)));
root.Subcommands.Add(train);

return await root.Parse(args).InvokeAsync();

static int Report(JsonObject result, bool asJson)
{
    Console.WriteLine(asJson ? result.ToJsonString() : result.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    return 0;
}
