using Retrieval.CandidateTower.Extensions;
using Retrieval.CandidateTower.Grpc;
using Retrieval.CandidateTower.Search;
using Retrieval.ServiceDefaults;

if (HealthProbe.IsRequested(args))
{
    return await HealthProbe.RunAsync(args, "http://127.0.0.1:5101");
}

// appsettings.json is read from beside the program, wherever it is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.AddServiceDefaults(SearchMetrics.MeterName);
builder.AddCandidateTower();

return builder.RunService(app =>
{
    app.UseCallAdmission();
    app.UseAbandonedCallsDropped();
    app.MapGrpcService<CandidateTowerService>();
    app.MapServiceDefaults();
});
