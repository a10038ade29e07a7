using System.Diagnostics;
using System.Text.RegularExpressions;
using Retrieval.Client;
using Retrieval.Core.Data;
using Retrieval.Integration.Tests.Infrastructure;

namespace Retrieval.Integration.Tests;

/// <summary>
/// docker/: the Dockerfiles and the compose file. Where a Docker engine runs, the stack is built and called for
/// real; where none does (this project's CI), that test is skipped and the process-based tests cover the same
/// behaviour, while the files themselves are still checked.
/// </summary>
public partial class DockerTests
{
    private static readonly string Root = Programs.RepositoryRoot;
    private static readonly string[] Dockerfiles = ["candidate-tower.Dockerfile", "query-tower.Dockerfile", "trainer.Dockerfile"];

    [GeneratedRegex(@"^\s*COPY\s+(?!--from)(.+?)\s+(\S+)\s*$", RegexOptions.Multiline)]
    private static partial Regex Copy();

    [GeneratedRegex(@"dotnet publish (\S+\.csproj)")]
    private static partial Regex Publish();

    [GeneratedRegex(@"ENTRYPOINT \[""dotnet"", ""([^""]+)\.dll""\]")]
    private static partial Regex Entrypoint();

    [GeneratedRegex(@"dockerfile:\s*(\S+)")]
    private static partial Regex ComposeDockerfile();

    [Theory]
    [InlineData("candidate-tower.Dockerfile")]
    [InlineData("query-tower.Dockerfile")]
    [InlineData("trainer.Dockerfile")]
    public void Dockerfile_ReferencesProjectsAndPathsThatExist(string name)
    {
        var text = File.ReadAllText(Path.Combine(Root, "docker", name));
        var copies = Copy().Matches(text);
        Assert.NotEmpty(copies);
        foreach (Match copy in copies)
        {
            foreach (var source in copy.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                Assert.True(File.Exists(Path.Combine(Root, source)) || Directory.Exists(Path.Combine(Root, source)), $"{name}: COPY {source} does not exist");
            }
        }
        var project = Publish().Match(text).Groups[1].Value;
        Assert.True(File.Exists(Path.Combine(Root, project)), $"{name}: publishes {project}, which does not exist");
        // Every project the published one references is copied into the build stage.
        foreach (var reference in ProjectReferences(Path.Combine(Root, project)))
        {
            var folder = Path.GetRelativePath(Root, Path.GetDirectoryName(reference)!) + "/";
            Assert.Contains(folder, text);
        }
        var assembly = Entrypoint().Match(text).Groups[1].Value;
        var csproj = File.ReadAllText(Path.Combine(Root, project));
        Assert.Contains($"<AssemblyName>{assembly}</AssemblyName>", csproj);
    }

    private static IEnumerable<string> ProjectReferences(string csproj)
    {
        var seen = new HashSet<string>();
        var queue = new Queue<string>([Path.GetFullPath(csproj)]);
        while (queue.Count > 0)
        {
            var current = queue.Dequeue();
            foreach (Match m in Regex.Matches(File.ReadAllText(current), @"ProjectReference Include=""([^""]+)"""))
            {
                var path = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(current)!, m.Groups[1].Value));
                if (seen.Add(path))
                {
                    queue.Enqueue(path);
                    yield return path;
                }
            }
        }
    }

    [Fact]
    public void ComposeFile_BuildsEachServiceFromAnExistingDockerfile()
    {
        var compose = File.ReadAllText(Path.Combine(Root, "docker", "compose.yaml"));
        var files = ComposeDockerfile().Matches(compose).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(Dockerfiles.Select(d => "docker/" + d).Order(), files.Order());
        Assert.Contains("CandidateTower__Address: http://candidate-tower:5101", compose);
        Assert.Contains("condition: service_healthy", compose);
    }

    private static string? ComposeCommand()
    {
        foreach (var candidate in new[] { "/usr/bin/docker-compose", "/usr/local/bin/docker-compose" })
        {
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private static (int Exit, string Output) Run(string file, string args, IReadOnlyDictionary<string, string>? env = null, int timeoutSeconds = 120)
    {
        var start = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Root };
        foreach (var (k, v) in env ?? new Dictionary<string, string>())
        {
            start.Environment[k] = v;
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeoutSeconds * 1000))
        {
            process.Kill(entireProcessTree: true);
            return (-1, "timed out");
        }
        return (process.ExitCode, output.Result + error.Result);
    }

    [SkippableFact]
    public void ComposeFile_IsValidForDockerCompose()
    {
        var compose = ComposeCommand();
        Skip.If(compose is null, "docker-compose is not installed (.ci/run installs Debian's docker-compose); ComposeFile_BuildsEachServiceFromAnExistingDockerfile checks the file without it");
        var (exit, output) = Run(compose!, "-f docker/compose.yaml config -q", new Dictionary<string, string> { ["MOVIELENS_DIR"] = Path.GetTempPath() });
        Assert.True(exit == 0, output);
    }

    [SkippableFact]
    public async Task Containers_TrainPublishAndServeRecommendations()
    {
        var compose = ComposeCommand();
        Skip.If(compose is null || Run("docker", "info").Exit != 0,
            "no Docker engine on this machine; the process-based tests (QueryTowerTests, CandidateTowerReloadTests) cover the same behaviour");
        var data = Path.Combine(Path.GetTempPath(), "retrieval-docker-" + Guid.NewGuid().ToString("N")[..8]);
        SampleGenerator.Write(data, new SampleOptions(Users: 300, Movies: 400, Ratings: 20_000));
        var env = new Dictionary<string, string> { ["MOVIELENS_DIR"] = data };
        string project = "retrieval-it-" + Guid.NewGuid().ToString("N")[..6];
        try
        {
            var (exit, output) = Run(compose!, $"-p {project} -f docker/compose.yaml up -d --build", env, timeoutSeconds: 1800);
            Assert.True(exit == 0, output);
            using var client = RetrievalClient.Create("http://127.0.0.1:5100");
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (true)
            {
                try
                {
                    var answer = await client.RecommendAsync("1", 5);
                    if (!answer.Degraded && answer.Movies.Count == 5)
                    {
                        break;
                    }
                }
                catch (Grpc.Core.RpcException) when (DateTime.UtcNow < deadline)
                {
                }
                Assert.True(DateTime.UtcNow < deadline, "the containers did not answer Recommend within 5 minutes");
                await Task.Delay(1000);
            }
        }
        finally
        {
            Run(compose!, $"-p {project} -f docker/compose.yaml down -v", env);
            Directory.Delete(data, recursive: true);
        }
    }
}
