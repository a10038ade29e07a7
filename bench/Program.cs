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

var n = new Option<int>("--n") { Description = "Candidates", DefaultValueFactory = _ => 1682 };
var dim = new Option<int>("--dim") { Description = "Embedding dimension", DefaultValueFactory = _ => 32 };
var k = new Option<int>("--k") { Description = "Results per query", DefaultValueFactory = _ => 100 };
var topkThreads = new Option<int>("--threads") { Description = "Threads one query may use (0 = all cores)", DefaultValueFactory = _ => 1 };
var seconds = new Option<double>("--seconds") { Description = "Measuring time per side", DefaultValueFactory = _ => 3 };
var noFaiss = new Option<bool>("--no-faiss") { Description = "Skip FAISS even when python3-faiss is installed" };
var topk = new Command("topk", "Exact top-K queries per second and memory per candidate, beside FAISS IndexFlatIP") { n, dim, k, topkThreads, seconds, noFaiss };
topk.SetAction(result => Report(TopKBenchmark.Run(result.GetValue(n), result.GetValue(dim), result.GetValue(k), result.GetValue(topkThreads),
    result.GetValue(seconds), result.GetValue(noFaiss)), result.GetValue(json)));
root.Subcommands.Add(topk);

var recSeconds = new Option<double>("--seconds") { Description = "Duration of each phase", DefaultValueFactory = _ => 10 };
var callers = new Option<int>("--callers") { Description = "Concurrent callers", DefaultValueFactory = _ => 32 };
var channels = new Option<int>("--channels") { Description = "gRPC channels the callers share", DefaultValueFactory = _ => 4 };
var rounds = new Option<int>("--rounds") { Description = "Alternating rounds of ceiling and Recommend; each reports its best", DefaultValueFactory = _ => 3 };
var loadFractions = new Option<string>("--load-fractions")
{
    Description = "More open-loop phases, as fractions of the measured maximum, comma-separated (half load always runs)",
    DefaultValueFactory = _ => "",
    HelpName = "LIST",
};
var rates = new Option<string>("--rates")
{
    Description = "More open-loop phases at fixed requests/s, comma-separated (to compare settings or machines at the same load)",
    DefaultValueFactory = _ => "",
    HelpName = "LIST",
};
var inline = new Option<bool>("--inline-io", "--inline-completions")
{
    Description = "Start the services with Transport:InlineIO (socket I/O continuations on the epoll threads: fewer thread hops per call; see bench/README.md)",
};
var tls = new Option<bool>("--tls")
{
    Description = "Both hops over TLS (https, certificates from a private authority made for the run), to measure what encryption costs",
};
var serviceEnv = new Option<string[]>("--service-env")
{
    Description = "NAME=VALUE set in both services' environment (repeatable), to measure runtime settings such as DOTNET_gcServer=1",
    HelpName = "NAME=VALUE",
    AllowMultipleArgumentsPerToken = false,
};
var h2load = new Option<bool>("--h2load")
{
    Description = "Also drive the half-load phases with nghttp2's h2load (a lean C generator over one connection per 100 calls/s; see bench/README.md)",
};
var serviceCpus = new Option<string>("--service-cpus")
{
    Description = "Run both services on these CPUs only, e.g. 0-1 (Linux); with --generator-cpus, measures the services on a set number of cores",
    HelpName = "LIST",
};
var generatorCpus = new Option<string>("--generator-cpus")
{
    Description = "Run the load generator (and h2load) on these CPUs only, e.g. 2-3 (Linux)",
    HelpName = "LIST",
};
var leanGenerator = new Option<bool>("--lean-generator")
{
    Description = "Also drive the half-load phases from a generator that costs little CPU (HTTP/2 written by hand, no thread pool; see bench/README.md)",
};
var hiccupMs = new Option<int>("--hiccup-ms")
{
    Description = "Also freeze the candidate service (SIGSTOP) this long, a third of the way into an extra ceiling phase at half load, then run one more: how the query service rides out a stall (Linux; see bench/README.md)",
    HelpName = "MS",
};
var pacerUs = new Option<string>("--pacer-us")
{
    Description = "Least time between the open-loop pacer's wake-ups, in µs. Under 1000 (Linux): it sleeps until the next call is due, "
        + "but no shorter. 1000: every millisecond, sending what came due since. With a list, each --rates phase runs once per value; the first paces the rest, --lean-generator too (see bench/README.md)",
    DefaultValueFactory = _ => Pacer.DefaultIntervalMicroseconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
    HelpName = "LIST",
};
var recommend = new Command("recommend", "Recommend requests/s and latency on loopback, beside the two-hop ceiling")
{
    dataDir, recSeconds, callers, channels, rounds, loadFractions, rates, inline, tls, serviceEnv, h2load, serviceCpus, generatorCpus, leanGenerator,
    hiccupMs, pacerUs,
};
recommend.SetAction(async (result, ct) =>
{
    try
    {
        return await RunRecommend(result);
    }
    catch (Exception e) when (e is ArgumentException or PlatformNotSupportedException)
    {
        // A mistyped option: one line saying which and why, not a stack trace.
        Console.Error.WriteLine($"error: {e.Message}");
        return 2;
    }
});
root.Subcommands.Add(recommend);

return await root.Parse(args).InvokeAsync();

async Task<int> RunRecommend(ParseResult result)
{
    var fractions = Numbers(result.GetValue(loadFractions)!, "--load-fractions", "a fraction between 0 and 2", v => v is > 0 and <= 2);
    var fixedRates = Numbers(result.GetValue(rates)!, "--rates", "a rate between 1 and 1,000,000 requests/s", v => v is >= 1 and <= 1_000_000);
    int hiccup = result.GetValue(hiccupMs);
    if (hiccup is < 0 or > 60_000)
    {
        throw new ArgumentException($"--hiccup-ms: {hiccup} is not between 0 and 60,000 ms");
    }
    if (hiccup > 0 && !OperatingSystem.IsLinux())
    {
        throw new PlatformNotSupportedException("--hiccup-ms freezes the candidate service with SIGSTOP, which needs Linux");
    }
    if (result.GetValue(tls) && (result.GetValue(h2load) || result.GetValue(leanGenerator)))
    {
        throw new ArgumentException("--tls: the h2load and lean generators speak cleartext HTTP/2 only; leave out --h2load and --lean-generator");
    }
    var environment = (result.GetValue(serviceEnv) ?? []).Select(e => e.Split('=', 2) is [{ Length: > 0 } name, var value]
        ? KeyValuePair.Create(name, value) : throw new ArgumentException($"--service-env: '{e}' is not NAME=VALUE")).ToDictionary();
    return Report(await RecommendBenchmark.RunAsync(new RecommendOptions
    {
        DataDir = result.GetValue(dataDir),
        Seconds = result.GetValue(recSeconds),
        Callers = Math.Max(1, result.GetValue(callers)),
        Channels = Math.Max(1, result.GetValue(channels)),
        Rounds = Math.Max(1, result.GetValue(rounds)),
        LoadFractions = fractions,
        Rates = fixedRates,
        InlineIO = result.GetValue(inline),
        Tls = result.GetValue(tls),
        ServiceEnvironment = environment,
        H2Load = result.GetValue(h2load),
        LeanGenerator = result.GetValue(leanGenerator),
        HiccupMs = hiccup,
        ServiceCpus = CpuAffinity.Parse(result.GetValue(serviceCpus), "--service-cpus"),
        GeneratorCpus = CpuAffinity.Parse(result.GetValue(generatorCpus), "--generator-cpus"),
        PacerMicroseconds = [.. Numbers(result.GetValue(pacerUs)!, "--pacer-us",
            $"a whole number of µs between {Pacer.MinIntervalMicroseconds} and {Pacer.MaxIntervalMicroseconds:N0}",
            v => v is >= Pacer.MinIntervalMicroseconds and <= Pacer.MaxIntervalMicroseconds && v == Math.Floor(v)).Select(v => (int)v)],
    }), result.GetValue(json));
}

static List<double> Numbers(string list, string option, string what, Func<double, bool> valid) =>
    [.. list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(f => double.TryParse(f, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && valid(v)
            ? v : throw new ArgumentException($"{option}: '{f}' is not {what}"))];

static int Report(JsonObject result, bool asJson)
{
    result["machine"] = BenchEnvironment.Machine();
    Console.WriteLine(asJson ? result.ToJsonString() : result.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    return 0;
}
