using Retrieval.QueryTower.Extensions;
using Retrieval.QueryTower.Grpc;
using Retrieval.QueryTower.Recommendation;
using Retrieval.ServiceDefaults;

if (HealthProbe.IsRequested(args))
{
    return await HealthProbe.RunAsync(args, "http://127.0.0.1:5100");
}

// appsettings.json is read from beside the program, wherever it is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.AddServiceDefaults(QueryMetrics.MeterName);
builder.AddQueryTower();

return builder.RunService(app =>
{
    app.UseCallAdmission();
    app.UseCallDeadlines();
    app.UseAbandonedCallsDropped();
    app.MapGrpcService<QueryTowerService>();
    app.MapServiceDefaults();
});
