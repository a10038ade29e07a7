using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Retrieval.Client;
using Retrieval.Core.Data;
using Retrieval.Core.Features;
using Retrieval.Trainer.Training;

namespace Retrieval.Trainer.Demo;

/// <summary>
/// The main job in one command: find MovieLens (or generate the sample, saying so), train the model with timestamps,
/// publish it, start both services on loopback, ask for recommendations for a few users at a few times of day,
/// print them, and keep serving until Ctrl+C (or exit with --exit).
/// </summary>
public static class DemoCommand
{
    public static Command Build(Func<Func<Task<int>>, Task<int>> guard, Action<string> log)
    {
        var dataDir = new Option<string?>("--data-dir") { Description = "MovieLens folder; else the usual lookup, a download, or the generated sample", HelpName = "DIR" };
        var models = new Option<string>("--models") { Description = "Models folder to publish into and serve from", DefaultValueFactory = _ => "models", HelpName = "MODELS" };
        var queryPort = new Option<int>("--query-port") { Description = "Query service port on 127.0.0.1 (a free one if taken)", DefaultValueFactory = _ => 5100 };
        var candidatePort = new Option<int>("--candidate-port") { Description = "Candidate service port on 127.0.0.1 (a free one if taken)", DefaultValueFactory = _ => 5101 };
        var exit = new Option<bool>("--exit") { Description = "Stop the services and exit after printing the recommendations" };
        var noDownload = new Option<bool>("--no-download") { Description = "Use the generated sample rather than downloading MovieLens" };
        var command = new Command("demo", "The whole pipeline: train, publish, serve both gRPC services, show recommendations")
        {
            dataDir, models, queryPort, candidatePort, exit, noDownload,
        };
        command.SetAction((result, ct) => guard(() => RunAsync(result.GetValue(dataDir), result.GetValue(models)!, result.GetValue(queryPort),
            result.GetValue(candidatePort), result.GetValue(exit), result.GetValue(noDownload), log, ct)));
        return command;
    }

    private static async Task<string> FindData(string? dataDir, bool noDownload, Action<string> log, CancellationToken ct)
    {
        if (DataLocator.Find(dataDir) is { } found)
        {
            return found;
        }
        if (!noDownload)
        {
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(TimeSpan.FromSeconds(30));
                return await DataLocator.FindOrDownloadAsync(null, log, timeout.Token);
            }
            catch (DirectoryNotFoundException e)
            {
                log(e.Message.Split(". ")[0]);
            }
        }
        var sample = Path.Combine(DataLocator.CacheDirectory, "sample");
        if (MovieLensLoader.DetectFormat(sample) is null)
        {
            SampleGenerator.Write(sample, new SampleOptions());
        }
        log($"MovieLens is not available here: using the built-in generated sample in {sample} (synthetic users and movies, not MovieLens)");
        return sample;
    }

    private static async Task<int> RunAsync(string? dataDir, string models, int queryPort, int candidatePort, bool exit, bool noDownload,
        Action<string> log, CancellationToken ct)
    {
        var dataset = MovieLensLoader.Load(await FindData(dataDir, noDownload, log, ct), log);
        var options = TrainingOptions.Best;
        log($"Training the best configuration ({options.FeatureSetName}; {options.DescribeChanges()})");
        var device = DeviceSelector.Select(options.Device, 0, log);
        using (var run = TrainRun.Execute(TrainingData.Prepare(dataset, options), options, device, evaluateTrain: false, log, ct))
        {
            Console.WriteLine($"Trained on {dataset.Name}: test top-100 accuracy {run.Test[100]:F3} (top-10 {run.Test[10]:F3})");
            var version = ArtifactExport.Publish(models, run);
            Console.WriteLine($"Published model version {version} to {Path.GetFullPath(models)}");
        }

        candidatePort = ServiceLauncher.PortOrFree(candidatePort);
        queryPort = ServiceLauncher.PortOrFree(queryPort);
        string candidateAddress = $"http://127.0.0.1:{candidatePort}", queryAddress = $"http://127.0.0.1:{queryPort}";
        var modelsPath = Path.GetFullPath(models);
        using var candidate = ServiceLauncher.Start("CandidateTower.Service", ["--urls", candidateAddress, "--Model:Directory", modelsPath], log);
        using var query = ServiceLauncher.Start("QueryTower.Service",
            ["--urls", queryAddress, "--Model:Directory", modelsPath, "--CandidateTower:Address", candidateAddress], log);
        try
        {
            using var client = RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri(queryAddress), Deadline = TimeSpan.FromSeconds(5) });
            await WaitForFirstAnswer(client, ct);
            await ShowRecommendations(client, dataset);
            Console.WriteLine();
            Console.WriteLine($"Query service:     {queryAddress}  (retrieval.v1.QueryTower: Recommend, Embed; health; reflection)");
            Console.WriteLine($"Candidate service: {candidateAddress}  (retrieval.v1.CandidateTower: TopK, BatchTopK, BatchTopKStream, GetIndexInfo)");
            if (exit)
            {
                return 0;
            }
            Console.WriteLine("Serving. Retrain with `trainer train --publish " + models + "` to roll out a new version; Ctrl+C stops.");
            var stopped = new TaskCompletionSource();
            using var registration = ct.Register(() => stopped.TrySetResult());
            candidate.EnableRaisingEvents = query.EnableRaisingEvents = true;
            candidate.Exited += (_, _) => stopped.TrySetResult();
            query.Exited += (_, _) => stopped.TrySetResult();
            await stopped.Task;
            return candidate.HasExited || query.HasExited ? 1 : 0;
        }
        finally
        {
            Stop(query);
            Stop(candidate);
        }
    }

    private static void Stop(Process process)
    {
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(5_000);
        }
    }

    private static async Task WaitForFirstAnswer(RetrievalClient client, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                var answer = await client.RecommendAsync("1", 1, cancellationToken: ct);
                if (!answer.Degraded)
                {
                    return;
                }
            }
            catch (RpcException) when (clock.Elapsed < TimeSpan.FromSeconds(60))
            {
            }
            if (clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new InvalidOperationException("the services did not answer within a minute");
            }
            await Task.Delay(200, ct);
        }
    }

    private static async Task ShowRecommendations(RetrievalClient client, MovieLensDataset dataset)
    {
        // A few users with the most ratings, at three times of day on the last day of the data.
        var users = dataset.Ratings.UserIds.GroupBy(u => u).OrderByDescending(g => g.Count()).Take(3).Select(g => g.Key).ToList();
        var lastDay = DateTimeOffset.FromUnixTimeSeconds(dataset.Ratings.Timestamps.Max()).UtcDateTime.Date;
        var times = new[] { lastDay.AddHours(8), lastDay.AddHours(13), lastDay.AddHours(21) };
        Console.WriteLine();
        Console.WriteLine($"{"user",-6} {"when (UTC)",-17} {"#",2}  {"movie",-52} {"score",7}");
        Console.WriteLine(new string('-', 88));
        foreach (var user in users)
        {
            foreach (var time in times)
            {
                var answer = await client.RecommendAsync(user, 5, new DateTimeOffset(time, TimeSpan.Zero), excludeRated: true);
                foreach (var movie in answer.Movies)
                {
                    string title = movie.Title.Length > 52 ? movie.Title[..49] + "..." : movie.Title;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{(movie.Rank == 1 ? user : ""),-6} {(movie.Rank == 1 ? time.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) : ""),-17} {movie.Rank,2}  {title,-52} {movie.Score,7:F3}"));
                }
                if (answer.Degraded)
                {
                    Console.WriteLine($"       (degraded: {answer.DegradedReason})");
                }
            }
        }
    }
}
