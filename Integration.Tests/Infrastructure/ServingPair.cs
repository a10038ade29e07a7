namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>Both services as real processes on free loopback ports, the query service pointed at the candidate service.</summary>
public sealed class ServingPair : IDisposable
{
    public ServingPair(string models, params string[] queryArgs)
        : this(models, [], queryArgs)
    {
    }

    public ServingPair(string models, string[] candidateArgs, string[] queryArgs)
    {
        Candidate = new ServiceProcess(Programs.CandidateTower, ["--Model:Directory", models, "--Model:PollIntervalSeconds", "0.2", .. candidateArgs]);
        // Generous time limits unless a test sets its own: a shared 2-core CI machine can stall a call for a second.
        Query = new ServiceProcess(Programs.QueryTower,
        [
            "--Model:Directory", models, "--Model:PollIntervalSeconds", "0.2", "--CandidateTower:Address", Candidate.Address,
            "--CandidateTower:AttemptTimeoutMs", "5000", "--Recommend:DefaultDeadlineMs", "20000", .. queryArgs,
        ]);
    }

    public ServiceProcess Candidate { get; }
    public ServiceProcess Query { get; }

    public async Task WaitAsync()
    {
        await Candidate.WaitForHealthAsync();
        await Query.WaitForHealthAsync();
    }

    public void Dispose()
    {
        Query.Dispose();
        Candidate.Dispose();
    }
}
