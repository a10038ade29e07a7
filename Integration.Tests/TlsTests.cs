using System.Diagnostics;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Retrieval.Client;
using Retrieval.Integration.Tests.Infrastructure;

namespace Retrieval.Integration.Tests;

/// <summary>
/// Both services on TLS with certificates from a private authority: the caller's hop and the query service's hop to the
/// candidate tower each trust that authority alone (TrustedCaPath), and a certificate from anyone else is refused; with
/// Tls:ClientCaPath the services also ask their callers for certificates from it (mutual TLS).
/// </summary>
public class TlsTests(TrainedModelsFixture shared) : IClassFixture<TrainedModelsFixture>
{
    [Fact]
    public async Task BothServicesOnTls_AnswerCallersThatTrustTheirAuthority_AndNoOneElse()
    {
        var (trusted, other) = Authorities();
        using var candidate = Candidate(trusted);
        using var query = Query(candidate, trusted, trusted.AuthorityPath);
        await candidate.WaitForHealthAsync();
        await query.WaitForHealthAsync();
        Assert.StartsWith("https://", query.Address);

        using (var client = RetrievalClient.Create(Options(query, trusted.AuthorityPath)))
        {
            var answer = await client.RecommendAsync("1", 10);
            Assert.False(answer.Degraded, answer.DegradedReason); // the query service reached the candidate tower over TLS
            Assert.Equal(10, answer.Movies.Count);
        }
        // The same through dependency injection: the client factory's handler is given the authorities.
        await using (var provider = new ServiceCollection()
            .AddRetrievalClient(o => (o.Address, o.TrustedCaPath, o.Deadline) = (new Uri(query.Address), trusted.AuthorityPath, TimeSpan.FromSeconds(20)))
            .Services.BuildServiceProvider())
        {
            Assert.False((await provider.GetRequiredService<RetrievalClient>().RecommendAsync("1", 10)).Degraded);
        }

        // Callers that trust the system's authorities or another private one are refused at the handshake.
        foreach (var caPath in new[] { null, other.AuthorityPath })
        {
            var options = Options(query, caPath);
            options.MaxAttempts = 1;
            using var client = RetrievalClient.Create(options);
            var refused = await Assert.ThrowsAsync<RpcException>(() => client.RecommendAsync("1", 10));
            // gRPC's status for a failed handshake is INTERNAL (not retried, unlike UNAVAILABLE), with the TLS error.
            Assert.Equal(StatusCode.Internal, refused.StatusCode);
            Assert.Contains("The SSL connection could not be established", refused.Status.Detail);
        }

        // The container probe: SERVING given the authority, refused without it.
        Assert.Equal(0, Programs.Run(Programs.QueryTower, ["healthcheck", query.Address, trusted.AuthorityPath]).ExitCode);
        Assert.Equal(1, Programs.Run(Programs.QueryTower, ["healthcheck", query.Address]).ExitCode);
    }

    [Fact]
    public async Task AQueryServiceThatDoesNotTrustTheCandidateTowersAuthority_AnswersDegraded_AndNeverSearches()
    {
        var (trusted, other) = Authorities();
        using var candidate = Candidate(trusted);
        using var query = Query(candidate, trusted, other.AuthorityPath);
        await candidate.WaitForHealthAsync();
        await query.WaitForHealthAsync();
        var options = Options(query, trusted.AuthorityPath);
        options.Deadline = TimeSpan.FromSeconds(5);
        using var client = RetrievalClient.Create(options);
        var clock = Stopwatch.StartNew();
        var answer = await client.RecommendAsync("1", 10);
        Assert.True(answer.Degraded, "answered from the candidate tower although its certificate was not trusted");
        Assert.Equal(10, answer.Movies.Count); // the popularity fallback
        // The log says why, from the warm-up call the service makes when it loads a version.
        const string Why = "Candidate tower not reachable yet (Internal: Error starting gRPC call. HttpRequestException: The SSL connection could not be established";
        for (var wait = Stopwatch.StartNew(); !query.Output.Contains(Why) && wait.Elapsed < TimeSpan.FromSeconds(20);)
        {
            await Task.Delay(100);
        }
        Assert.Contains(Why, query.Output);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the fallback took {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public async Task MutualTls_LetsInOnlyCallersWithACertificateFromTheClientAuthority()
    {
        var (trusted, other) = Authorities();
        string[] askForCertificates = ["--Tls:ClientCaPath", trusted.AuthorityPath];
        using var candidate = Candidate(trusted, askForCertificates);
        using var query = Query(candidate, trusted, trusted.AuthorityPath,
            [.. askForCertificates, "--CandidateTower:ClientCertificatePath", trusted.ClientCertificatePath, "--CandidateTower:ClientKeyPath", trusted.ClientKeyPath]);
        using var queryWithoutCertificate = Query(candidate, trusted, trusted.AuthorityPath);
        await candidate.WaitForHealthAsync();
        await query.WaitForHealthAsync();
        await queryWithoutCertificate.WaitForHealthAsync();

        var options = Options(query, trusted.AuthorityPath);
        options.ClientCertificate = trusted.ClientCertificate();
        using (var client = RetrievalClient.Create(options))
        {
            var answer = await client.RecommendAsync("1", 10);
            Assert.False(answer.Degraded, answer.DegradedReason); // both hops authenticated both ways
        }
        await using (var provider = new ServiceCollection()
            .AddRetrievalClient(o => (o.Address, o.TrustedCaPath, o.ClientCertificate, o.Deadline) =
                (new Uri(query.Address), trusted.AuthorityPath, trusted.ClientCertificate(), TimeSpan.FromSeconds(20)))
            .Services.BuildServiceProvider())
        {
            Assert.False((await provider.GetRequiredService<RetrievalClient>().RecommendAsync("1", 10)).Degraded);
        }

        // Callers without a certificate, or with one from another authority, are refused.
        foreach (var certificate in new[] { null, other.ClientCertificate() })
        {
            var refusedOptions = Options(query, trusted.AuthorityPath);
            (refusedOptions.ClientCertificate, refusedOptions.MaxAttempts) = (certificate, 1);
            using var client = RetrievalClient.Create(refusedOptions);
            var refused = await Assert.ThrowsAsync<RpcException>(() => client.RecommendAsync("1", 10));
            Assert.True(refused.StatusCode is StatusCode.Internal or StatusCode.Unavailable, refused.Status.ToString());
        }
        // So is a query service that presents no certificate to the candidate tower: it answers from the fallback.
        using (var client = RetrievalClient.Create(Options(queryWithoutCertificate, trusted.AuthorityPath)))
        {
            Assert.True((await client.RecommendAsync("1", 10)).Degraded, "the candidate tower answered a caller without a certificate");
        }

        // The container probe needs the certificate too.
        Assert.Equal(0, Programs.Run(Programs.QueryTower, ["healthcheck", query.Address, trusted.AuthorityPath, trusted.ClientCertificatePath, trusted.ClientKeyPath]).ExitCode);
        Assert.Equal(1, Programs.Run(Programs.QueryTower, ["healthcheck", query.Address, trusted.AuthorityPath]).ExitCode);
        var halfACertificate = Programs.Run(Programs.QueryTower, ["healthcheck", query.Address, trusted.AuthorityPath, trusted.ClientCertificatePath]);
        Assert.Equal(2, halfACertificate.ExitCode);
        Assert.Contains("go together", halfACertificate.Error);
    }

    [Theory]
    [InlineData("query", "CandidateTower", "'TrustedCaPath'", "TrustedCaPath is for an https Address", "--CandidateTower:TrustedCaPath", "{ca}")]
    [InlineData("query", "CandidateTower", "'TrustedCaPath'", "cannot read the certificate authorities file",
        "--CandidateTower:Address", "https://127.0.0.1:5101", "--CandidateTower:TrustedCaPath", "{ca}.missing")]
    [InlineData("query", "CandidateTower", "'TrustedCaPath'", "holds no PEM certificate",
        "--CandidateTower:Address", "https://127.0.0.1:5101", "--CandidateTower:TrustedCaPath", "{key}")]
    [InlineData("query", "CandidateTower", "'ClientCertificatePath,ClientKeyPath'", "give both or neither",
        "--CandidateTower:Address", "https://127.0.0.1:5101", "--CandidateTower:ClientCertificatePath", "{clientCertificate}")]
    [InlineData("query", "CandidateTower", "'ClientCertificatePath'", "cannot load the certificate",
        "--CandidateTower:Address", "https://127.0.0.1:5101", "--CandidateTower:ClientCertificatePath", "{clientCertificate}",
        "--CandidateTower:ClientKeyPath", "{key}")]
    [InlineData("candidate", "Tls", "'ClientCaPath'", "needs an https url", "--Tls:ClientCaPath", "{ca}")]
    [InlineData("query", "Tls", "'ClientCaPath'", "holds no PEM certificate", "--Tls:ClientCaPath", "{key}")]
    public void ABadTlsSetting_StopsTheServiceAtStart_WithOneLineNamingIt(string service, string section, string name, string problem,
        params string[] settings)
    {
        var (trusted, _) = Authorities();
        var args = settings.Select(a => a.Replace("{ca}", trusted.AuthorityPath).Replace("{key}", trusted.KeyPath)
            .Replace("{clientCertificate}", trusted.ClientCertificatePath));
        var result = Programs.Run(service == "query" ? Programs.QueryTower : Programs.CandidateTower,
            ["--urls", $"http://127.0.0.1:{Programs.FreePort()}", "--Metrics:Url", "", .. args], TimeSpan.FromMinutes(1));
        Assert.Equal(2, result.ExitCode);
        var line = Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"configuration error in section {section}: ", line);
        Assert.Contains(name, line);
        Assert.Contains(problem, line);
    }

    [Fact]
    public async Task ARenewedCertificateWrittenOverTheFiles_IsServedToNewConnections_WithoutARestart()
    {
        var (trusted, renewed) = Authorities();
        // The endpoint as Kestrel:Endpoints, whose certificate files Kestrel watches (an --urls endpoint's default
        // certificate is read once).
        int port = Programs.FreePort();
        using var candidate = new ServiceProcess(Programs.CandidateTower,
        [
            "--Model:Directory", shared.Models.Models, "--Kestrel:Endpoints:Grpc:Url", $"https://127.0.0.1:{port}",
            "--Kestrel:Endpoints:Grpc:Certificate:Path", trusted.CertificatePath, "--Kestrel:Endpoints:Grpc:Certificate:KeyPath", trusted.KeyPath,
        ], port, tls: trusted);
        await candidate.WaitForHealthAsync();
        async Task<bool> Accepts(TestCertificates authority)
        {
            using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(candidate.Address,
                new Grpc.Net.Client.GrpcChannelOptions { HttpHandler = authority.TrustingHandler() }); // a new connection
            try
            {
                await new Grpc.Health.V1.Health.HealthClient(channel).CheckAsync(new Grpc.Health.V1.HealthCheckRequest(),
                    deadline: DateTime.UtcNow.AddSeconds(10));
                return true;
            }
            catch (RpcException)
            {
                return false;
            }
        }
        Assert.True(await Accepts(trusted));
        Assert.False(await Accepts(renewed));

        // As a certificate manager renews it: new files in place of the old (here from another authority, to tell them apart).
        File.Copy(renewed.CertificatePath, trusted.CertificatePath, overwrite: true);
        File.Copy(renewed.KeyPath, trusted.KeyPath, overwrite: true);
        var clock = Stopwatch.StartNew();
        while (!await Accepts(renewed) && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(200);
        }
        Assert.True(await Accepts(renewed), "the service still served the old certificate 30 s after the files changed");
        Assert.False(await Accepts(trusted));
    }

    [Fact]
    public async Task TheClientLibrarysNetStandardBuild_CallsOverTlsAndMutualTls_TrustingThePrivateAuthorityAlone()
    {
        var (trusted, other) = Authorities();
        using var candidate = Candidate(trusted);
        using var query = Query(candidate, trusted, trusted.AuthorityPath, "--Tls:ClientCaPath", trusted.AuthorityPath);
        await candidate.WaitForHealthAsync();
        await query.WaitForHealthAsync();
        var library = new NetStandardClient();
        try
        {
            // Its own chain check (no custom root store before .NET 5): the authority's certificate lets it in.
            using (var client = library.Create(library.Options(("Address", new Uri(query.Address)), ("TrustedCaPath", trusted.AuthorityPath),
                ("ClientCertificate", trusted.ClientCertificate()), ("Deadline", TimeSpan.FromSeconds(20)))))
            {
                Assert.Equal((false, 10), await NetStandardClient.RecommendAsync(client, "1", 10));
            }
            // Another authority's, or none where the service asks for one, does not.
            foreach (var (authority, certificate) in new[] { (other.AuthorityPath, trusted.ClientCertificate()), (trusted.AuthorityPath, null) })
            {
                using var client = library.Create(library.Options(("Address", new Uri(query.Address)), ("TrustedCaPath", authority),
                    ("ClientCertificate", certificate), ("MaxAttempts", 1), ("Deadline", TimeSpan.FromSeconds(20))));
                await Assert.ThrowsAsync<RpcException>(() => NetStandardClient.RecommendAsync(client, "1", 10));
            }
        }
        finally
        {
            library.Unload();
        }
    }

    [Fact]
    public void TheClientLibrary_RefusesABadTrustedCaPath_WhenTheClientIsMadeOrResolved()
    {
        var (trusted, _) = Authorities();
        var cleartext = Assert.Throws<ArgumentException>(() =>
            RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri("http://127.0.0.1:5100"), TrustedCaPath = trusted.AuthorityPath }));
        Assert.Contains("TrustedCaPath is for an https address", cleartext.Message);
        var noCertificate = Assert.Throws<ArgumentException>(() =>
            RetrievalClient.Create(new RetrievalClientOptions { Address = new Uri("https://127.0.0.1:5100"), TrustedCaPath = trusted.KeyPath }));
        Assert.Contains("holds no PEM certificate", noCertificate.Message);
        // Through dependency injection the file is checked when the client is first resolved, not at its first call.
        using var provider = new ServiceCollection()
            .AddRetrievalClient(o => (o.Address, o.TrustedCaPath) = (new Uri("https://127.0.0.1:5100"), trusted.AuthorityPath + ".missing"))
            .Services.BuildServiceProvider();
        var missing = Assert.Throws<ArgumentException>(() => provider.GetRequiredService<RetrievalClient>());
        Assert.Contains("cannot read the certificate authorities file", missing.Message);
    }

    private (TestCertificates Trusted, TestCertificates Other) Authorities()
    {
        var folder = Path.Combine(shared.Models.Root, "tls-" + Guid.NewGuid().ToString("N")[..8]);
        return (new TestCertificates(folder, "trusted"), new TestCertificates(folder, "other"));
    }

    private ServiceProcess Candidate(TestCertificates tls, params string[] args) =>
        new(Programs.CandidateTower, ["--Model:Directory", shared.Models.Models, .. args], tls: tls);

    private ServiceProcess Query(ServiceProcess candidate, TestCertificates tls, string candidateAuthority, params string[] args) =>
        new(Programs.QueryTower,
        [
            "--Model:Directory", shared.Models.Models, "--CandidateTower:Address", candidate.Address,
            "--CandidateTower:TrustedCaPath", candidateAuthority, "--CandidateTower:AttemptTimeoutMs", "2000",
            "--Recommend:DefaultDeadlineMs", "20000", .. args,
        ], tls: tls);

    private static RetrievalClientOptions Options(ServiceProcess query, string? caPath) =>
        new() { Address = new Uri(query.Address), TrustedCaPath = caPath, Deadline = TimeSpan.FromSeconds(20) };
}
